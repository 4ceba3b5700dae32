"""``fpx recipes [NAME|FILE.toml]``: the training recipes, listed or one printed.

Without a name: one line per preset (name, content hash, summary), or with ``--json`` a list of
``{name, hash, summary, reference, quantized}``.  With a preset name or a path to a recipe TOML
file: :meth:`~explorer.train.recipes.Recipe.describe` and then the TOML it was read from;
``--toml`` prints the TOML alone (a starting point for one's own recipe:
``fpx recipes te-nvfp4 --toml > my.toml``).  The recipes themselves live in
:mod:`explorer.train.recipes`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recipes", help="list the training recipes, or print one (fpx train --recipe NAME)",
        description="List the preset training recipes (name, content hash, summary), or print "
                    "one: what it quantizes and how, then its TOML. A recipe says, for each of "
                    "the six GEMM inputs, the format, blocks, scale rule, rounding and scaling, "
                    "plus Hadamard transforms and the accumulator (docs/recipes.md). Train with "
                    "one: fpx train --recipe NAME|FILE.toml.")
    p.add_argument("recipe", nargs="?", metavar="NAME|FILE.toml",
                   help="a preset name (see the list) or a path to a recipe TOML file")
    p.add_argument("--toml", action="store_true",
                   help="print only the recipe's TOML (e.g. fpx recipes te-nvfp4 --toml > "
                        "my.toml, then edit it)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list of {name, hash, summary, reference, quantized} "
                        "(with NAME: one such object, plus describe and toml)")
    return p


def _entry(recipe) -> dict:
    """The JSON form of one recipe in the listing."""
    return {"name": recipe.name, "hash": recipe.content_hash, "summary": recipe.summary,
            "reference": recipe.reference, "quantized": list(recipe.quantized)}


def run(args: argparse.Namespace) -> int:
    # explorer.train imports torch (recipes build QuantConfigs): loaded only when this runs.
    from ..train.recipes import get_recipe, presets
    if args.toml and args.json:
        raise ValueError("--toml and --json are exclusive: --toml prints the recipe's TOML as "
                         "it is, --json a JSON description")
    if args.recipe is None:
        if args.toml:
            raise ValueError("--toml prints one recipe: give its name, e.g. fpx recipes "
                             "te-nvfp4 --toml")
        recipes = presets()
        if args.json:
            print(json.dumps([_entry(r) for r in recipes]))
            return 0
        width = max(len(r.name) for r in recipes)
        for r in recipes:
            print(f"{r.name:{width}s}  {r.content_hash}  {r.summary}")
        return 0
    recipe = get_recipe(args.recipe)
    if args.json:
        print(json.dumps({**_entry(recipe), "describe": recipe.describe(),
                          "toml": recipe.text}))
        return 0
    text = recipe.text if recipe.text.endswith("\n") else recipe.text + "\n"
    if args.toml:
        sys.stdout.write(text)
        return 0
    print(recipe.describe())
    print()
    sys.stdout.write(text)
    return 0
