"""Training recipes: the field's low-precision training settings, as data.

A recipe says, for each of the six GEMM inputs of a linear layer (:data:`~explorer.train.qlinear.
TARGETS`), the format (element or block spec, so block shape and direction come with it), scale
rule, rounding and scaling algorithm, which backward copy it uses; for each GEMM an optional
random Hadamard transform; and the accumulator that sums the products.  Recipes are TOML files
(the presets live in ``explorer/data/recipes/``; users write their own with the same keys)::

    name = "my-recipe"                  # optional for a file: defaults to the file's stem
    summary = "one line"                # optional
    reference = "where it comes from"   # optional
    accumulator = "e8m13/rtz/chunk128"  # optional: explorer.accumulation's spec
    matrix_unit = "h100"                # optional, instead of accumulator
    matrix_unit_format = "float16"      # optional, with matrix_unit
    promotion = 128                     # optional, with matrix_unit: products per promotion
    include_head = false                # optional: also quantize the classifier

    [wgrad]                             # a GEMM: fwd, dgrad or wgrad
    hadamard = 16                       # random Hadamard transform of 16 elements
    signs = "fixed"                     # or "step": drawn anew every optimizer step

    [fwd_x]                             # a GEMM input; a missing table: unquantized
    format = "nvfp4"                    # any fpx format or block spec ("none": unquantized)
    block = "none"                      # int, "channel", "tensor" or "none" (the default)
    rounding = "rne"                    # rne rna rtz rtp rtn rto sr
    scaling = "current"                 # or "delayed" (per tensor; block must be "tensor")
    amax_history = 1024                 # delayed only: steps of amax kept
    amax_reduce = "max"                 # delayed only: or "most_recent"
    margin = 0                          # delayed only: scale / 2**margin
    copy = "own"                        # wgrad_x, dgrad_w, wgrad_dy: own, requantize or reuse

A ``copy = "reuse"`` input may leave out everything else: it is its source's spec.  A recipe
becomes a :class:`~explorer.train.qlinear.QuantConfig` through :meth:`Recipe.quant_config`, which
records the recipe's name and :attr:`Recipe.content_hash` (the hash of what it does, not of its
name or wording), so a run, its checkpoints and its database row say which recipe it ran.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from .qlinear import (
    AMAX_REDUCTIONS,
    COPY_SOURCES,
    GEMMS,
    TARGETS,
    DelayedScaling,
    OperandSpec,
    PerTarget,
    QuantConfig,
)

PRESET_DIR = Path(__file__).resolve().parent.parent / "data" / "recipes"
TOP_KEYS = ("name", "summary", "reference", "accumulator", "matrix_unit", "matrix_unit_format",
            "promotion", "include_head")
OPERAND_KEYS = ("format", "block", "rounding", "scaling", "amax_history", "amax_reduce",
                "margin", "copy")
GEMM_KEYS = ("hadamard", "signs")
SCALINGS = ("current", "delayed")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe (see the module docstring for the TOML keys).

    name: what runs and reports call it.
    summary, reference: one line each: what it does, where it comes from.
    operands: the spec of every GEMM input (None: unquantized), by target.
    transforms: ``((gemm, block, signs), ...)``: random Hadamard transforms.
    accumulator, matrix_unit, matrix_unit_format, promotion, include_head: as in
        :class:`~explorer.train.qlinear.QuantConfig`.
    text: the TOML it was read from (what ``fpx recipes NAME`` prints).
    """

    name: str
    summary: str
    reference: str
    operands: PerTarget
    transforms: tuple[tuple[str, int, str], ...] = ()
    accumulator: str | None = None
    matrix_unit: str | None = None
    matrix_unit_format: str = "float16"
    promotion: int | None = None
    include_head: bool = False
    text: str = ""

    def quant_config(self, seed: int = 0) -> QuantConfig:
        """The :class:`QuantConfig` running this recipe (``seed``: stochastic rounding and
        Hadamard signs), recording the recipe's name and content hash."""
        return self._config(seed, self.name, self.content_hash)

    def _config(self, seed: int, name: str | None, digest: str | None) -> QuantConfig:
        return QuantConfig(fmt=None, overrides=tuple((t, s) for t, s in
                                                     zip(TARGETS, self.operands) if s is not None),
                           seed=seed, include_head=self.include_head,
                           accumulator=self.accumulator, matrix_unit=self.matrix_unit,
                           matrix_unit_format=self.matrix_unit_format,
                           promotion=self.promotion, transforms=self.transforms, recipe=name,
                           recipe_hash=digest)

    def quantizers_only(self) -> Recipe:
        """This recipe with torch's GEMMs instead of its accumulator or matrix unit (the same
        quantized inputs, fast): what the speed bar and the quantizer tests run."""
        return replace(self, accumulator=None, matrix_unit=None,
                       matrix_unit_format="float16", promotion=None)

    @property
    def content_hash(self) -> str:
        """16 hex digits of SHA-256 over what the recipe does (its QuantConfig without seed and
        name): two recipes with one hash train identically."""
        d = self._config(0, None, None).to_dict()
        del d["seed"]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def quantized(self) -> tuple[str, ...]:
        """The GEMM inputs the recipe quantizes."""
        return tuple(t for t, s in zip(TARGETS, self.operands) if s is not None)

    def describe(self) -> str:
        """A few lines: name, summary, source, and one line per GEMM input and transform."""
        lines = [f"{self.name}  (hash {self.content_hash})", f"  {self.summary}",
                 f"  source: {self.reference}"]
        for t, s in zip(TARGETS, self.operands):
            lines.append(f"  {t:9s} " + ("unquantized" if s is None else
                                         f"{s.label()} rounding {s.rounding}"))
        for g, b, signs in self.transforms:
            lines.append(f"  {g:9s} random Hadamard transform, {b} elements, signs {signs}")
        if self.accumulator:
            lines.append(f"  accumulator {self.accumulator}")
        if self.matrix_unit:
            lines.append(f"  matrix unit {self.matrix_unit} ({self.matrix_unit_format} inputs)"
                         + (f", promoted into float32 every {self.promotion} products with the "
                            f"block scales" if self.promotion else ""))
        return "\n".join(lines)


def _fail(origin: str, msg: str) -> ValueError:
    return ValueError(f"recipe {origin}: {msg}")


def _operand(origin: str, target: str, table: object) -> OperandSpec | str | None:
    """One GEMM input's table: an OperandSpec, None (unquantized) or ``"reuse"`` (filled from
    its source later)."""
    if not isinstance(table, dict):
        raise _fail(origin, f"[{target}] must be a table of keys {', '.join(OPERAND_KEYS)}")
    unknown = sorted(set(table) - set(OPERAND_KEYS))
    if unknown:
        raise _fail(origin, f"[{target}] unknown key {unknown[0]!r}; allowed: "
                    f"{', '.join(OPERAND_KEYS)}")
    copy = table.get("copy", "own")
    if copy == "reuse" and set(table) == {"copy"}:
        return "reuse"
    fmt = table.get("format")
    if not isinstance(fmt, str) or not fmt.strip():
        raise _fail(origin, f"[{target}] needs format = \"...\" (a format name or block spec, or "
                    "\"none\" for unquantized)")
    if fmt.strip().lower() == "none":
        return None
    scaling = table.get("scaling", "current")
    if scaling not in SCALINGS:
        raise _fail(origin, f"[{target}] scaling must be one of {', '.join(SCALINGS)}, "
                    f"got {scaling!r}")
    delayed_keys = sorted({"amax_history", "amax_reduce", "margin"} & set(table))
    if scaling != "delayed" and delayed_keys:
        raise _fail(origin, f"[{target}] {delayed_keys[0]} applies to scaling = \"delayed\" only")
    try:
        delayed = None if scaling != "delayed" else DelayedScaling(
            table.get("amax_history", 1024), table.get("amax_reduce", AMAX_REDUCTIONS[0]),
            table.get("margin", 0))
        spec = OperandSpec(fmt.strip(), table.get("block", "none"), table.get("rounding", "rne"),
                           delayed, copy)
        spec.build()                                    # unknown format: fail here
    except (TypeError, ValueError, KeyError) as e:
        raise _fail(origin, f"[{target}] {e}") from None
    return spec


def parse_recipe(text: str, origin: str = "<text>", default_name: str | None = None) -> Recipe:
    """A :class:`Recipe` from TOML ``text``; ``ValueError`` naming ``origin`` and the table and
    key at fault (unknown key, bad value, a format fpx does not know, a combination the
    quantized GEMM refuses)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _fail(origin, f"not valid TOML ({e})") from None
    allowed = set(TOP_KEYS) | set(TARGETS) | set(GEMMS)
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise _fail(origin, f"unknown key or table {unknown[0]!r}; allowed: keys "
                    f"{', '.join(TOP_KEYS)}, GEMM-input tables {', '.join(TARGETS)}, GEMM tables "
                    f"{', '.join(GEMMS)}")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name.strip()):
        raise _fail(origin, f"name must be a non-empty word (no spaces), got {name!r}")
    for k in ("summary", "reference"):
        if not isinstance(doc.get(k, ""), str):
            raise _fail(origin, f"{k} must be a string")
    specs = {t: _operand(origin, t, doc[t]) if t in doc else None for t in TARGETS}
    for t, s in specs.items():
        if s == "reuse":
            src = COPY_SOURCES.get(t)
            if src is None or not isinstance(specs.get(src), OperandSpec):
                raise _fail(origin, f"[{t}] copy = \"reuse\" needs "
                            + (f"[{src}] quantized" if src else "a backward input "
                               f"({', '.join(COPY_SOURCES)})"))
            base = specs[src]
            specs[t] = OperandSpec(base.fmt, base.block, base.rounding, base.delayed, "reuse")
    transforms = []
    for g in GEMMS:
        if g not in doc:
            continue
        table = doc[g]
        if not isinstance(table, dict) or set(table) - set(GEMM_KEYS) or "hadamard" not in table:
            raise _fail(origin, f"[{g}] takes hadamard = <block> and optionally signs = "
                        "\"fixed\" or \"step\"")
        transforms.append((g, table["hadamard"], table.get("signs", "fixed")))
    include_head = doc.get("include_head", False)
    if not isinstance(include_head, bool):
        raise _fail(origin, f"include_head must be true or false, got {include_head!r}")
    recipe = Recipe(name=name.strip(), summary=doc.get("summary", ""),
                    reference=doc.get("reference", ""), operands=PerTarget(**specs),
                    transforms=tuple(transforms), accumulator=doc.get("accumulator"),
                    matrix_unit=doc.get("matrix_unit"),
                    matrix_unit_format=doc.get("matrix_unit_format", "float16"),
                    promotion=doc.get("promotion"), include_head=include_head, text=text)
    try:
        recipe.quant_config()           # the combination checks of QuantConfig
    except (TypeError, ValueError) as e:
        raise _fail(origin, str(e)) from None
    if not recipe.quantized and not recipe.accumulator and not recipe.matrix_unit:
        raise _fail(origin, f"quantizes no GEMM input; give at least one of the tables "
                    f"{', '.join(TARGETS)} a format")
    return recipe


def preset_names() -> tuple[str, ...]:
    """The preset recipes' names, sorted."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))


def get_recipe(name_or_path: str | Path, base_dir: str | Path | None = None) -> Recipe:
    """A preset by name (:func:`preset_names`) or a recipe TOML file by path (a ``Path``, or a
    string ending in ``.toml`` or holding a ``/``; relative to ``base_dir`` when given).
    ``ValueError`` naming the presets for an unknown name; ``FileNotFoundError`` for a missing
    file."""
    s = str(name_or_path)
    if s.endswith(".toml") or isinstance(name_or_path, Path) or "/" in s:
        path = Path(s) if base_dir is None else Path(base_dir) / s
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"recipe {path}: cannot be read ({e})") from None
        return parse_recipe(text, str(path), default_name=path.stem)
    if s not in preset_names():
        raise ValueError(f"unknown recipe {s!r}; presets: {', '.join(preset_names())} "
                         "(or a path to a .toml recipe)")
    path = PRESET_DIR / f"{s}.toml"
    recipe = parse_recipe(path.read_text(encoding="utf-8"), s)
    if recipe.name != s:
        raise ValueError(f"preset file {path.name} names itself {recipe.name!r}")
    return recipe


def presets() -> tuple[Recipe, ...]:
    """Every preset recipe, by name."""
    return tuple(get_recipe(n) for n in preset_names())
