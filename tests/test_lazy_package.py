"""The packages that load their names on first use (``monai_stlu.data``, ``monai_stlu.utils``): every exported name
is the object its module defines, whatever was imported before, and a name that is also a module's is refused."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import pytest

from monai_stlu.utils import lazy_exports


@pytest.mark.parametrize("package", ["monai_stlu.data", "monai_stlu.utils"])
def test_every_exported_name_is_its_modules_object_after_all_modules_loaded(package):
    """Importing each module first (as other modules and bundle expressions do) binds the module to the package
    under its own name; no exported name may be shadowed that way (``monai_stlu.data.find_images`` was, when the
    function's module had its name)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert not isinstance(value, types.ModuleType), (package, name)
        assert getattr(value, "__module__", package).startswith(package), (package, name, value)
    assert set(pkg.__all__) <= set(dir(pkg))


def test_a_name_that_is_also_a_module_is_refused(tmp_path):
    namespace = {"__name__": "p", "__path__": [str(tmp_path)]}
    (tmp_path / "reader.py").write_text("")
    with pytest.raises(ValueError, match=r"\['reader'\]"):
        lazy_exports("p", {"readers": ("reader",)}, namespace)
    all_, getattr_, _ = lazy_exports("p", {"reader": ("Reader",)}, namespace)
    assert all_ == ["Reader"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr_("nope")


def test_the_data_package_loads_a_name_without_monai():
    script = ("import sys\nfrom monai_stlu.data import write_synthetic_la, LA_CASE_PATH, open_h5\n"
              "print(sorted(m for m in ('monai', 'torch', 'itk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
