"""Test machines only: let torchvision's Python code import where its compiled ops cannot load.

The torchvision 0.28.0 wheel that a package index offers for Linux is built against the CUDA
build of torch 2.13.0; installed beside the CPU build (which the lock pins here), its `_C`
library fails to load and `import torchvision` then stops while registering fake kernels for
two operators it never defined (`torchvision::nms`, `torchvision::qnms`). Defining those two
schemas first lets the pure-Python parts seedbed uses (datasets, transforms.v2, models) import
and run; none of them calls those operators. With a matching torchvision (a CPU build, or CUDA
torch) the library loads and nothing here is done. `tests/conftest.py` puts this directory on
PYTHONPATH, so the training processes the tests start get it too.
"""

import importlib.util
import sys


class _TorchvisionOpsFinder:
    """Runs once, just before torchvision is first imported; finds nothing itself."""

    library = None

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return None
        import torch

        try:
            torch.ops.load_library(f"{spec.submodule_search_locations[0]}/_C.so")
        except (OSError, RuntimeError):
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TorchvisionOpsFinder.library = library  # keep the definitions alive
        return None


# Once per process: a pytest-xdist worker starts with this directory on PYTHONPATH (so this
# file has run) and then runs conftest.py, which runs it again; two finders would define the
# two schemas twice, and torchvision would then not import at all.
if not getattr(sys, "_seedbed_torchvision_shim", False):
    sys._seedbed_torchvision_shim = True  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _TorchvisionOpsFinder())
