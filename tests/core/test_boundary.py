"""The library under qlora/ is Dagster-free, and the training entrypoint imports only what the GPU image has.

An AST walk rather than an import, so a lazy import inside a function is caught too.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "qlora"

# What the GPU image has (torch, transformers, accelerate) plus the wheels carried to it.
ENTRYPOINT_ALLOWED = {
    "torch", "transformers", "accelerate", "bitsandbytes", "trl", "peft", "datasets", "dill", "multiprocess",
    "dagster_pipes", "liger_kernel", "pydantic", "pydantic_core", "annotated_types", "typing_inspection",
    "typing_extensions", "yaml", "numpy", "safetensors", "qlora",
    # installed with torch / transformers themselves (triton: a dependency of torch's CUDA wheels and of liger-kernel)
    "tokenizers", "filelock", "huggingface_hub", "packaging", "psutil", "jinja2", "triton",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def qlora_modules_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("qlora."):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("qlora."))
    return found


def test_library_never_imports_dagster():
    offenders = {
        str(path.relative_to(REPO)): sorted(r for r in imported_roots(path) if r == "dagster" or
                                            (r.startswith("dagster_") and r != "dagster_pipes"))
        for path in LIBRARY.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"qlora/ must not import dagster (Dagster code lives in qlora_assets/): {offenders}"


def test_library_never_imports_the_dagster_side():
    offenders = [str(p.relative_to(REPO)) for p in LIBRARY.rglob("*.py")
                 if imported_roots(p) & {"qlora_assets", "resources", "definitions"}]
    assert not offenders, f"qlora/ imports qlora_assets/resources: {offenders}"


def _module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_training_entrypoint_imports_only_what_the_gpu_image_has():
    """Follow the entrypoint's qlora imports transitively; every third-party root must be allowed."""
    stdlib = set(sys.stdlib_module_names)
    seen: set[Path] = set()
    todo = [_module_file("qlora.training.entrypoint")]
    bad: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        extra = imported_roots(path) - stdlib - ENTRYPOINT_ALLOWED - {"__future__"}
        if extra:
            bad[str(path.relative_to(REPO))] = extra
        todo.extend(_module_file(m) for m in qlora_modules_imported(path))
    assert len(seen) > 1, "the walk found no qlora modules behind the entrypoint"
    assert not bad, f"the training entrypoint reaches imports the GPU image lacks: {bad}"
