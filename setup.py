"""The Python package's build: setuptools (PEP 517, `pip install .`) hands the compiled part to
CMake — the same build as scripts/setup.sh, in the same build/ directory — and lays out a package
that needs nothing outside itself but the system libraries gad links (torch, OpenCV, ...):

    gad/__init__.py …      the Python files (python/gad/)
    gad/_gad.*.so          the module, RPATH $ORIGIN/lib
    gad/lib/libgad.so.0    the library; its assets are found relative to it (util/assets.h)
    gad/share/gad/         the assets (tokenizer vocabulary, configs, heads)
    gad/bin/gad            the command line (`python -m gad`, and the `gad` script pip installs)

Environment: GAD_CMAKE_BUILD_DIR (default build/), GAD_CMAKE_ARGS (extra configure arguments).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def version() -> str:
    """The one version number: CMakeLists.txt's project() VERSION."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(gad VERSION ([0-9.]+)", text).group(1)


class CMakeBuild(build_ext):
    """Builds the programs with CMake, installs them into a staging prefix (which sets the install
    RPATHs), and copies the parts into the package directory."""

    def build_extension(self, ext: Extension) -> None:
        build = Path(os.environ.get("GAD_CMAKE_BUILD_DIR", ROOT / "build")).resolve()
        configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     f"-DPython3_EXECUTABLE={sys.executable}"]
        if not (build / "CMakeCache.txt").exists():
            configure += ["-DGAD_BUILD_TESTS=OFF"] + (["-G", "Ninja"] if shutil.which("ninja") else [])
        configure += shlex.split(os.environ.get("GAD_CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        jobs = str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", "--build", str(build), "--target", "gad_cli", "gad_python", "-j", jobs])
        package = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        with tempfile.TemporaryDirectory() as stage:
            subprocess.check_call(["cmake", "--install", str(build), "--prefix", stage], stdout=subprocess.DEVNULL)
            self.lay_out(Path(stage), package, Path(self.get_ext_fullpath(ext.name)))

    @staticmethod
    def lay_out(stage: Path, package: Path, module: Path) -> None:
        for sub in ("lib", "bin", "share"):
            shutil.rmtree(package / sub, ignore_errors=True)
        (package / "lib").mkdir(parents=True)
        (package / "bin").mkdir()
        # The module needs libgad by its SONAME; a wheel holds no symbolic links, so copy the file.
        library = next(stage.glob("lib*/libgad.so.*.*"))
        shutil.copy2(library, package / "lib" / "libgad.so.0")
        shutil.copy2(stage / "bin" / "gad", package / "bin" / "gad")
        shutil.copytree(stage / "share" / "gad", package / "share" / "gad")
        built = next(stage.glob("lib*/python3*/dist-packages/gad/_gad*.so"))
        shutil.copy2(built, module)


setup(version=version(), ext_modules=[Extension("gad._gad", sources=[])], cmdclass={"build_ext": CMakeBuild},
      options={"build": {"build_base": "build/python-package"}})
