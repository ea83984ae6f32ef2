"""Nothing in ``kraken/`` can execute or unpickle what it reads or receives.

Checked on the source (AST) of every module:
- no import of a module that deserialises code or objects (pickle and its relatives);
- ``torch.load`` only with ``weights_only=True`` (tensors, never arbitrary objects);
- ``numpy.load`` never with ``allow_pickle`` set to anything but ``False``;
- no call of the builtins ``eval``, ``exec`` or ``compile``.
The self-tests feed snippets that break each rule, so the checks can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kraken"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal",
                  "shelve", "copyreg"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def problems(source: str, name: str = "<src>") -> list[str]:
    """Every violation in ``source``, as ``name:line: what``."""
    tree = ast.parse(source, filename=name)
    torch_names, numpy_names, torch_load, found = {"torch"}, {"numpy", "np"}, set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in UNSAFE_MODULES:
                    found.append(f"{name}:{node.lineno}: imports {a.name}")
                if top == "torch":
                    torch_names.add(a.asname or top)
                if top == "numpy":
                    numpy_names.add(a.asname or top)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in UNSAFE_MODULES:
                found.append(f"{name}:{node.lineno}: imports from {node.module}")
            if top == "torch":
                torch_load |= {a.asname or a.name for a in node.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, kw = node.func, {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and f.id in UNSAFE_BUILTINS:
            found.append(f"{name}:{node.lineno}: calls {f.id}()")
        owner = f.value.id if isinstance(f, ast.Attribute) and \
            isinstance(f.value, ast.Name) else None
        is_torch_load = (isinstance(f, ast.Attribute) and f.attr == "load"
                         and owner in torch_names) or \
            (isinstance(f, ast.Name) and f.id in torch_load)
        if is_torch_load and not _const(kw.get("weights_only"), True):
            found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
        if isinstance(f, ast.Attribute) and f.attr == "load" and owner in numpy_names \
                and "allow_pickle" in kw and not _const(kw["allow_pickle"], False):
            found.append(f"{name}:{node.lineno}: numpy.load with allow_pickle")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle\n",
    "from pickle import loads\n",
    "import cloudpickle as cp\n",
    "import marshal\n",
    "import torch\ntorch.load(f)\n",
    "import torch\ntorch.load(f, weights_only=False)\n",
    "import torch as T\nT.load(f, weights_only=flag)\n",
    "from torch import load\nload(f)\n",
    "import numpy as np\nnp.load(f, allow_pickle=True)\n",
    "eval(text)\n",
    "exec(code)\n",
])
def test_the_check_catches(snippet: str) -> None:
    assert problems(snippet)


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(f, weights_only=True)\n",
    "import numpy as np\nnp.load(f)\nnp.load(f, allow_pickle=False)\n",
    "model.eval()\n",
    "import json\njson.loads(b)\n",
])
def test_the_check_allows(snippet: str) -> None:
    assert problems(snippet) == []


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PKG.parent)))
def test_no_module_can_execute_or_unpickle_what_it_reads(path: Path) -> None:
    assert problems(path.read_text(), str(path.relative_to(PKG.parent))) == []
