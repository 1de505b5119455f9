"""Run the paper reproductions: every repro/<name>.py with run(quick) -> dict, results to docs/repro/.

usage: python repro/run.py [--quick] [--only NAME ...] [--out docs/repro]
Each result is written as NAME.json and NAME.md (the table, the finding, whether it held, the command).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["linear_vae_collapse", "be_more_active", "conditional_hierarchical_collapse", "ard_vae", "vsae_dead_latents",
         "likelihood_table", "diffusevae_fashion", "red_diff_inverse", "posterior_collapse_attack", "purifier_robustness",
         "pvrnn_meta_prior", "latent_sde_hurst", "vq_codec_rate_distortion", "learned_codec_vs_webp",
         "recombiner_rate_distortion", "squeeze3d_pointclouds", "laf_unlearning", "phg_mae"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"repro_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(result: dict, name: str, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    held = "held" if result["held"] else "did NOT hold"
    md = [f"# {result['title']}", "", f"Finding: {result['finding']}", "", f"**Result: the finding {held}.**", "",
          result["table"], "", result.get("notes", ""), "",
          *([("Checks: " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in result["checks"].items())), ""]
            if "checks" in result else []), f"Command: `{command}` ({result['seconds']:.0f} s).", ""]
    (out / f"{name}.md").write_text("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small versions, for tests")
    p.add_argument("--only", nargs="*", help="names to run (default: all)")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "repro"))
    args = p.parse_args(argv)
    names = args.only or ORDER
    command = "make repro" if not (args.quick or args.only) else "python repro/run.py " + " ".join(sys.argv[1:])
    ok = True
    for name in names:
        t0 = time.perf_counter()
        result = load(name).run(quick=args.quick)
        result["seconds"] = time.perf_counter() - t0
        write(result, name, Path(args.out), command)
        ok &= result["held"]
        print(f"{name}: the finding {'held' if result['held'] else 'did NOT hold'} ({result['seconds']:.0f} s)")
    if not ok:
        print("some findings did not hold: see docs/repro/ for what was measured and tried")
    return 0


if __name__ == "__main__":
    sys.exit(main())
