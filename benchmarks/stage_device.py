"""Stage what ``benchmarks/device_check.py`` needs on a bare GPU machine into one git-ignored folder (default
``.stage``), to name in the device tool's ``carry``:

    python benchmarks/stage_device.py                      # cases (packed) + lists + wheels, under 40 MiB of cases
    python benchmarks/stage_device.py --no-wheels          # cases only

- ``cases/``: LA cases packed losslessly by ``../shared/data/LA/transfer/pack.py`` (about 1.4 MiB a case), and that
  folder's ``unpack.py`` to restore the h5 layout there;
- ``probe_train.list``: the 8 labeled cases of the 8-label protocol (the first 8 of ``train.list``), the protocol's 4
  validation cases and ``--unlabeled`` more training cases; ``subset_test.list``: the 8 test cases;
- ``wheels/``: the packages the device image lacks (MONAI, pytorch-ignite, nibabel, fire and its termcolor), for its
  Python 3.12, as the device README says; ``MANIFEST.json``: what is there, with sizes.

The shared data stay outside the repository: the folder is git-ignored and is rebuilt, not committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL_IDS = ("3DA0T2V6JJ2NLUAV6FWM", "9DQYTIU00I4JC0OEOKQQ", "FGM5NIWN3URY4HF4WNUW", "OIRDLE32TXZX942FVZMM")
WHEELS = ("monai==1.6.1", "pytorch-ignite==0.5.5", "nibabel==5.4.2", "fire==0.7.1", "termcolor==3.3.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
CASES_LIMIT_MIB = 40


def folder_mib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, ".stage"))
    ap.add_argument("--la", default=os.environ.get("STLU_SHARED_LA", os.path.join(REPO, "..", "shared", "data", "LA")))
    ap.add_argument("--unlabeled", type=int, default=8, help="unlabeled training cases beside the 8 labeled + 4 validation")
    ap.add_argument("--no-wheels", dest="wheels", action="store_false")
    args = ap.parse_args(argv)
    transfer = os.path.join(args.la, "transfer")
    if not os.path.isfile(os.path.join(transfer, "pack.py")):
        raise SystemExit(f"{transfer}/pack.py: not found; point --la at the shared LA folder.")
    with open(os.path.join(args.la, "train.list")) as f:
        train = f.read().split()
    with open(os.path.join(args.la, "subset_test.list")) as f:
        test = f.read().split()
    labeled = train[:8]
    unlabeled = [c for c in train[8:] if c not in VAL_IDS][: args.unlabeled]
    probe = labeled + list(VAL_IDS) + unlabeled
    os.makedirs(args.out, exist_ok=True)
    cases = os.path.join(args.out, "cases")
    shutil.rmtree(cases, ignore_errors=True)
    ids = os.path.join(args.out, "ids.txt")
    with open(ids, "w") as f:
        f.write("\n".join(probe + test) + "\n")
    subprocess.run([sys.executable, os.path.join(transfer, "pack.py"), args.la, ids, cases], check=True)
    shutil.copy(os.path.join(transfer, "unpack.py"), os.path.join(args.out, "unpack.py"))
    for name, content in (("probe_train.list", probe), ("subset_test.list", test)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write("\n".join(content) + "\n")
    size = folder_mib(cases)
    if size > CASES_LIMIT_MIB:
        raise SystemExit(f"{cases}: {size:.1f} MiB of packed cases, over {CASES_LIMIT_MIB} MiB: use fewer --unlabeled.")
    wheels = os.path.join(args.out, "wheels")
    if args.wheels:
        shutil.rmtree(wheels, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", wheels, *WHEELS]
        subprocess.run(cmd, check=True)
    manifest = {"cases": len(probe) + len(test), "probe_train": len(probe), "test": len(test),
                "cases_mib": round(size, 1), "wheels": sorted(os.listdir(wheels)) if os.path.isdir(wheels) else [],
                "total_mib": round(folder_mib(args.out), 1)}
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(json.dumps(manifest))
    return manifest


if __name__ == "__main__":
    main()
