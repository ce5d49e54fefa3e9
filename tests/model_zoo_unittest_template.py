"""The Model Zoo unit test of a monai_stlu bundle, in the zoo's own form (``ci/unit_tests/test_<bundle>.py``, run by
its ``ci/unit_tests/runner.py -b <bundle>`` from the zoo's root, the bundle in ``models/<bundle>``): train, evaluate
and infer through ``ConfigWorkflow`` with the properties checked, on synthetic volumes in the bundle's h5 layout.

It is a template: ``tests/test_model_zoo.py`` writes it into a model-zoo checkout as ``test_<bundle>.py`` with
``BUNDLE`` set (this file's name keeps pytest from collecting it here; a zoo pull request would carry the copy).
"""

import os
import shutil
import tempfile
import unittest

from monai.bundle import ConfigWorkflow
from utils import check_workflow

from monai_stlu.data import SYNTHETIC_LAYOUTS, write_synthetic_la

BUNDLE = "stlu_la"
SMALL = {"n_filters": 4, "patch_size": [32, 32, 32], "val_stride": [16, 16, 16], "eval_stride": [16, 16, 16],
         "progress": False, "amp": False, "num_workers": 0}


def test_order(name1, name2):
    def rank(name):
        return 1 if "train" in name else 2 if "infer" in name else 3

    return rank(name1) - rank(name2)


class TestBundle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dataset_dir = tempfile.mkdtemp()
        cls.bundle_root = os.path.join("models", BUNDLE)
        layout = SYNTHETIC_LAYOUTS[BUNDLE]
        names = layout.get("list_names", ("train.list", "test.list"))
        write_synthetic_la(cls.dataset_dir, num_train=6, num_test=1, shape=(48, 48, 48), **layout)
        cls.data = {"dataset_dir": cls.dataset_dir, "train_list": names[0], "test_list": names[1], "num_labeled": 2,
                    "num_val": 1, **({"val_list": names[2]} if len(names) > 2 else {})}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dataset_dir)

    def _workflow(self, workflow_type, *configs, **override):
        return ConfigWorkflow(
            workflow_type=workflow_type,
            config_file=[os.path.join(self.bundle_root, "configs", c) for c in configs],
            logging_file=os.path.join(self.bundle_root, "configs", "logging.conf"),
            meta_file=os.path.join(self.bundle_root, "configs", "metadata.json"),
            bundle_root=self.bundle_root,
            **override,
        )

    def test_train_eval_config(self):
        override = {**self.data, **SMALL, "max_iterations": 2, "val_interval": 2, "resume": False}
        check_workflow(self._workflow("train", "train.json", "quick.json", **override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.bundle_root, "models", "model.pt")))
        check_workflow(self._workflow("train", "train.json", "quick.json", "evaluate.json", **override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.bundle_root, "eval", "metrics.csv")))

    def test_infer_config(self):
        override = {**SMALL, "input_dir": self.dataset_dir}
        check_workflow(self._workflow("infer", "inference.json", **override), check_properties=True)
        self.assertTrue(os.listdir(os.path.join(self.bundle_root, "eval", "predictions")))


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
