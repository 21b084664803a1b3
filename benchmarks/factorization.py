"""Ablations of the factorization levers, both halves side by side: one command, one table.

    python benchmarks/factorization.py                                   # glyphs, the cpu preset's recipe
    python benchmarks/factorization.py --ali_variants= --ali_dir=runs/glyphs   # FDEN levers on a given ALI
    python benchmarks/factorization.py --dataset=omniglot --preset=omniglot_cpu --data_dir=... --splits_dir=...

Two ladders, each run an ordinary output directory of the pipeline under --output_dir (resumable; finished
runs are read back):

* ALI variants (`ALI_VARIANTS`), each trained with the same seed on the same data: the adversarial balance
  (mean D(x, G_z(x)) and D(G_x(z), z) over the second half of training; "saturated" when D is near-certain
  throughout), the Fréchet distance of prior samples in a small classifier's features (beside real and noise
  references) and the held-out reconstruction MSE.
* FDEN variants (`FDEN_VARIANTS`) on one ALI (--ali_dir, else the last ALI variant's), the same seed, the
  same training and test episodes: few-shot from f_ide, f_sty and z; fidelity of the plug-in; on glyphs the
  ground-truth translation score and the identity probe on f_sty.

Writes <output_dir>/results.json and results.md and prints the tables.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "cpu", "Configuration preset the variants start from (fden_tf/config.py).")
flags.DEFINE_string("dataset", None, "Dataset (default: the preset's).")
flags.DEFINE_string("data_dir", None, "The dataset's folder (see scripts/train.py --data_dir).")
flags.DEFINE_string("splits_dir", None, "Omniglot's Vinyals split lists.")
flags.DEFINE_string("output_dir", None, "Where the runs and results go (default runs/factorization_<preset>).")
flags.DEFINE_list("ali_variants", None, "ALI variants to train, by name (default: all of ALI_VARIANTS).")
flags.DEFINE_list("fden_variants", None, "FDEN variants to train, by name (default: all of FDEN_VARIANTS).")
flags.DEFINE_string("ali_dir", None, "The ALI run the FDEN variants plug into (default: the last ALI variant).")
flags.DEFINE_integer("ali_steps", None, "Override the preset's ALI steps (quick trials).")
flags.DEFINE_integer("fden_steps", None, "Override the preset's FDEN steps (quick trials).")
flags.DEFINE_integer("seed", None, "Override the preset's training seed (initialisation, episodes; the data "
                     "stay the same): repeats of a ladder show how much its numbers move.")

# Each variant is a complete set of the levers it is about, so a row means the same whatever the preset
# holds today. ALI: ALI's objective with Appendix B.2's l2 term (the old cpu recipe), then beyond ALI.
_ALI_OBJECTIVE = {"kl_weight": 0.0, "prior_matching_weight": 0.0, "discriminator_lr_factor": 1.0,
                  "instance_noise": 0.0, "prior_moment_weight": 0.0}
ALI_VARIANTS = {
    "ali+l2": dict(_ALI_OBJECTIVE),
    "ali+l2+d_lr0.1": dict(_ALI_OBJECTIVE, discriminator_lr_factor=0.1),
    "ali+l2+noise0.2": dict(_ALI_OBJECTIVE, instance_noise=0.2),
    "ali+l2+mmd100+noise0.2": dict(_ALI_OBJECTIVE, prior_matching_weight=100.0, instance_noise=0.2),
    # The cpu preset's ALI since 2026-12-07 (docs/results.md, twelfth ladder).
    "ali+l2+mmd100+noise0.2+moments10": dict(_ALI_OBJECTIVE, prior_matching_weight=100.0, instance_noise=0.2,
                                             prior_moment_weight=10.0),
    "ali+l2+kl": dict(_ALI_OBJECTIVE, kl_weight=1.0),
    "ali+l2+mmd10": dict(_ALI_OBJECTIVE, prior_matching_weight=10.0),
    "ali+l2+mmd100": dict(_ALI_OBJECTIVE, prior_matching_weight=100.0),
}
# FDEN: the paper's losses on raw codes (the old cpu recipe), then each lever added in turn. alpha is
# Table 2's in every row that does not set it (the cpu preset's alpha is one of its levers; omniglot_cpu's
# 0.1 is overridden too, so rows on it compare with each other, not with that preset).
_PAPER_LOSSES = {"standardize_latents": False, "standardization": "per_dimension", "swap_weight": 0.0,
                 "style_confusion_weight": 0.0, "identity_swap_weight": 0.0, "style_bottleneck_weight": 0.0,
                 "style_dim": None, "clean_decoding_weight": 0.0, "alpha": 1.0, "cache_jitters": 0,
                 "entangler_refit_steps": 0, "identity_invariance_weight": 0.0,
                 "learning_rate_schedule": "constant", "neutral_style_weight": 0.0}
# The third ladder's base (a narrow f_sty with the identity swap and the style bottleneck), and that with
# clean decoding and alpha 3: the levers the cpu preset took on raw codes; on globally standardized codes
# (its recipe now) they become the fourth ladder's last row. Written out here, so the rows keep their
# meaning if the preset changes.
_NARROW_STYLE = dict(_PAPER_LOSSES, identity_swap_weight=1.0, style_dim=8, style_bottleneck_weight=0.1)
_CPU_LEVERS = dict(_NARROW_STYLE, clean_decoding_weight=1.0, alpha=3.0)
# The fifth and sixth ladders on top (docs/results.md): the cpu preset's FDEN since 2026-12-06.
_TODAYS_CPU = dict(_CPU_LEVERS, standardize_latents=True, standardization="global", alpha=0.4,
                   identity_swap_weight=0.07, clean_decoding_weight=0.07, cache_jitters=2,
                   entangler_refit_steps=2000)
FDEN_VARIANTS = {
    "paper losses": dict(_PAPER_LOSSES),
    "+ standardized z": dict(_PAPER_LOSSES, standardize_latents=True),
    "+ swap consistency": dict(_PAPER_LOSSES, standardize_latents=True, swap_weight=1.0),
    "+ style confusion": dict(_PAPER_LOSSES, standardize_latents=True, swap_weight=1.0,
                              style_confusion_weight=1.0),
    "+ identity swap": dict(_PAPER_LOSSES, identity_swap_weight=1.0),
    "+ identity swap x0.1": dict(_PAPER_LOSSES, identity_swap_weight=0.1),
    "+ identity swap + swap 0.1": dict(_PAPER_LOSSES, identity_swap_weight=1.0, swap_weight=0.1),
    "+ style bottleneck 0.1": dict(_PAPER_LOSSES, style_bottleneck_weight=0.1),
    "+ identity swap + style bottleneck 0.1": dict(_PAPER_LOSSES, identity_swap_weight=1.0,
                                                   style_bottleneck_weight=0.1),
    "+ standardized z + identity swap + style bottleneck 0.1": dict(
        _PAPER_LOSSES, standardize_latents=True, identity_swap_weight=1.0, style_bottleneck_weight=0.1),
    "+ standardized z + identity swap + style bottleneck 0.03": dict(
        _PAPER_LOSSES, standardize_latents=True, identity_swap_weight=1.0, style_bottleneck_weight=0.03),
    "+ style dim 8": dict(_PAPER_LOSSES, style_dim=8),
    "+ identity swap + style dim 8": dict(_PAPER_LOSSES, identity_swap_weight=1.0, style_dim=8),
    "+ identity swap + style dim 4": dict(_PAPER_LOSSES, identity_swap_weight=1.0, style_dim=4),
    "+ identity swap + style dim 8 + style bottleneck 0.1": dict(_NARROW_STYLE),
    "+ identity swap + style dim 8 + style bottleneck 0.03": dict(_NARROW_STYLE, style_bottleneck_weight=0.03),
    "+ identity swap + style dim 8 + style bottleneck 0.3": dict(_NARROW_STYLE, style_bottleneck_weight=0.3),
    "+ identity swap + style dim 16 + style bottleneck 0.1": dict(_NARROW_STYLE, style_dim=16),
    "+ style dim 8 + style bottleneck 0.1": dict(_NARROW_STYLE, identity_swap_weight=0.0),
    "+ identity swap + style dim 8 + style bottleneck 0.1 + clean decoding": dict(
        _NARROW_STYLE, clean_decoding_weight=1.0),
    "+ identity swap + style dim 8 + style bottleneck 0.03 + clean decoding": dict(
        _NARROW_STYLE, style_bottleneck_weight=0.03, clean_decoding_weight=1.0),
    "+ identity swap + style dim 8 + style bottleneck 0.1 + clean decoding + alpha 3": dict(_CPU_LEVERS),
    "+ identity swap + style dim 4 + style bottleneck 0.1 + clean decoding + alpha 3": dict(
        _CPU_LEVERS, style_dim=4),
    "+ identity swap + style dim 8 + style bottleneck 0.1 + clean decoding + alpha 3 + style confusion": dict(
        _CPU_LEVERS, style_confusion_weight=1.0),
    "+ identity swap + style dim 8 + style bottleneck 0.1 + clean decoding + alpha 3 + style confusion 0.3": dict(
        _CPU_LEVERS, style_confusion_weight=0.3),
    "+ identity swap + style dim 4 + style bottleneck 0.1 + clean decoding + alpha 3 + style confusion 0.3": dict(
        _CPU_LEVERS, style_dim=4, style_confusion_weight=0.3),
    # The cpu levers with the weights of the terms measured in z (L_R, identity swap, clean decoding)
    # divided by 8.5: the balanced ALI's codes have 8.5x the mean square of the cpu ALI's (0.572 against
    # 0.067 a dimension), so these rows weigh those terms against L_C, L_M and the rate as the cpu preset
    # does on its own ALI.
    "cpu levers with z-space weights / 8.5": dict(
        _CPU_LEVERS, alpha=3.0 / 8.5, identity_swap_weight=1.0 / 8.5, clean_decoding_weight=1.0 / 8.5),
    "cpu levers with z-space weights / 4": dict(
        _CPU_LEVERS, alpha=3.0 / 4, identity_swap_weight=1.0 / 4, clean_decoding_weight=1.0 / 4),
    # The same balance for any ALI: FDEN on codes at unit spread (one scale for every coordinate), with the
    # z-space weights of the cpu levers times the cpu ALI's variance per coordinate (0.066): 0.2 / 0.07.
    "cpu levers on globally standardized z": dict(
        _CPU_LEVERS, standardize_latents=True, standardization="global", alpha=0.2, identity_swap_weight=0.07,
        clean_decoding_weight=0.07),
    "cpu levers on globally standardized z + jitter 2 + alpha 0.4 + entangler refit": _TODAYS_CPU,
    # The seventh ladder (docs/results.md): Fisher's criterion on f_ide.
    **{f"cpu + identity invariance {w:g}": dict(_TODAYS_CPU, identity_invariance_weight=w)
       for w in (1, 3, 10, 30)},
    "cpu + identity invariance 3 + identity swap 0.3": dict(
        _TODAYS_CPU, identity_invariance_weight=3.0, identity_swap_weight=0.3),
    "cpu + identity invariance 10 + style bottleneck 0.03": dict(
        _TODAYS_CPU, identity_invariance_weight=10.0, style_bottleneck_weight=0.03),
    "cpu + identity invariance 10 + alpha 1": dict(_TODAYS_CPU, identity_invariance_weight=10.0, alpha=1.0),
    # The eighth ladder: the episodic learning rate decaying on a half cosine (the cpu preset's since).
    "cpu + cosine learning rate": dict(_TODAYS_CPU, learning_rate_schedule="cosine"),
    # The thirteenth ladder: A's identity decoded with the neutral style to its class's mean code.
    **{f"cpu + cosine learning rate + neutral style {w:g}": dict(
        _TODAYS_CPU, learning_rate_schedule="cosine", neutral_style_weight=w) for w in (0.1, 0.3)},
}


def _select(names, table, flag):
  if names is None:
    return dict(table)
  unknown = [n for n in names if n not in table]
  if unknown:
    raise ValueError(f"--{flag}: unknown {unknown}; choose from {sorted(table)}")
  return {n: table[n] for n in names}


def _run_name(name):
  return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def ali_row(metrics):
  a = metrics["ali"]
  d, fd = a["discriminator"], a["sample_quality"]["frechet_distance"]
  return {"d_real": d["d_real_second_half"], "d_fake": d["d_fake_second_half"], "saturated": d["saturated"],
          "fd_samples": fd["samples"], "fd_real": fd["real"], "fd_blurred": fd["blurred"],
          "fd_noise": fd["noise"], "fd_score": a["sample_quality"]["score"],
          "reconstruction_mse": a["reconstruction_mse"], "seconds": metrics["ali_train"]["seconds"]}


def fden_row(run_dir, metrics):
  with open(os.path.join(run_dir, "disentanglement.json")) as f:
    d = json.load(f)
  pix = d["fidelity"]["pixel_mse"]
  row = {"f_ide": metrics["fewshot"]["accuracy"], "f_ide_ci95": metrics["fewshot"]["ci95"],
         "f_sty": metrics["fewshot_baselines"]["f_sty"]["accuracy"],
         "z": metrics["fewshot_baselines"]["z"]["accuracy"],
         "latent_relative_error": d["fidelity"]["latent"]["relative_error"],
         "pixel_ratio": pix["z_tilde_vs_z"] / pix["reconstruction"],
         "distance_correlation": d["independence"]["distance_correlation"]["f_ide_vs_f_sty"],
         "seconds": metrics["fden_train"]["seconds"]}
  gt = d.get("ground_truth")
  if gt:
    tr = gt["translation"]
    row.update(translation_mse=tr["mse"]["score"], translation_ssim=tr["ssim"]["score"],
               probe_f_sty=gt["identity_probe"]["f_sty"], probe_chance=gt["identity_probe"]["chance"])
    if "class_mean_of_a_score" in tr["mse"]:  # the same for every variant on one ALI: shown once
      row["references"] = {name: [tr["mse"][f"{name}_score"], tr["ssim"][f"{name}_score"]]
                           for name in ("class_mean_of_a", "class_mean_analogy")}
  return row


def markdown(results):
  f = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"
  pct = lambda x: "–" if x is None else f"{100 * x:.2f}"
  out = []
  if results["ali"]:
    out += ["| ALI variant | D(x, G_z(x)) | D(G_x(z), z) | saturated | FD prior samples (real / blurred / noise) "
            "| FD score | reconstruction MSE | train s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["ali"].items():
      out.append(f"| {name} | {f(r['d_real'])} | {f(r['d_fake'])} | {'yes' if r['saturated'] else 'no'} | "
                 f"{r['fd_samples']:.3g} ({r['fd_real']:.2g} / {r['fd_blurred']:.3g} / {r['fd_noise']:.3g}) | "
                 f"{f(r['fd_score'])} | {f(r['reconstruction_mse'], 4)} | {r['seconds']:.0f} |")
    out.append("")
  if results["fden"]:
    out += [f"FDEN variants on `{results['fden_ali_dir']}`:", "",
            "| FDEN variant | f_ide | f_sty | z | ‖z−z̃‖²/‖z‖² | G(z̃) vs G(z) / rec. MSE | R* | translation "
            "MSE / SSIM | probe on f_sty | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["fden"].items():
      gt = "translation_mse" in r
      out.append(f"| {name} | {pct(r['f_ide'])} ± {pct(r['f_ide_ci95'])} | {pct(r['f_sty'])} | {pct(r['z'])} | "
                 f"{f(r['latent_relative_error'])} | {f(r['pixel_ratio'], 2)} | {f(r['distance_correlation'])} | "
                 + (f"{f(r['translation_mse'], 2)} / {f(r['translation_ssim'], 2)} | {pct(r['probe_f_sty'])} | "
                    if gt else "– | – | ") + f"{r['seconds']:.0f} |")
    refs = next((r["references"] for r in results["fden"].values() if "references" in r), None)
    if refs:
      out += ["", "Translation references that know every sample's class (same pairs, score MSE / SSIM): A's "
              f"class-mean code {f(refs['class_mean_of_a'][0], 2)} / {f(refs['class_mean_of_a'][1], 2)}, "
              f"A's class mean + B's offset from its class mean {f(refs['class_mean_analogy'][0], 2)} / "
              f"{f(refs['class_mean_analogy'][1], 2)}."]
  return "\n".join(out) + "\n"


def main(argv):
  del argv
  from fden_tf import config as config_lib
  from fden_tf import preflight
  try:
    ali_variants = _select(FLAGS.ali_variants, ALI_VARIANTS, "ali_variants")
    fden_variants = _select(FLAGS.fden_variants, FDEN_VARIANTS, "fden_variants")
    base = config_lib.get(FLAGS.preset)
    data_section = {k: v for k, v in (("dataset", FLAGS.dataset), ("data_dir", FLAGS.data_dir),
                                      ("splits_dir", FLAGS.splits_dir)) if v}
    base = base.replace(data=data_section, ali={"steps": FLAGS.ali_steps} if FLAGS.ali_steps else {},
                        fden={"steps": FLAGS.fden_steps} if FLAGS.fden_steps else {},
                        **({"seed": FLAGS.seed} if FLAGS.seed is not None else {}))
    output_dir = FLAGS.output_dir or os.path.join("runs", f"factorization_{FLAGS.preset}")
    if not ali_variants and not FLAGS.ali_dir:
      raise ValueError("the FDEN variants need an ALI: give --ali_dir or keep an --ali_variants entry")
    _, data = preflight.check(base, os.path.join(output_dir, "data_check"), stage="ali")
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from fden_tf import files
  from fden_tf import pipeline
  from fden_tf import runs
  results = {"preset": FLAGS.preset, "dataset": base.data.dataset, "ali": {}, "fden": {}}
  start = time.time()
  ali_dir = FLAGS.ali_dir
  for name, levers in ali_variants.items():
    run_dir = os.path.join(output_dir, "ali_" + _run_name(name))
    run_config = base.replace(ali=levers, fden=config_lib.FDENConfig())  # the ALI run uses no FDEN settings
    m = runs.finished_metrics(run_dir, run_config) or pipeline.train_and_evaluate(
        run_config, run_dir, stage="ali", show_progress=False, export=False, data=data)
    results["ali"][name] = ali_row(m)
    print(f"ALI {name}: {json.dumps(results['ali'][name])}", flush=True)
    ali_dir = FLAGS.ali_dir or run_dir
  results["fden_ali_dir"] = ali_dir
  for name, levers in fden_variants.items():
    run_dir = os.path.join(output_dir, "fden_" + _run_name(name))
    run_config = base.replace(fden=levers)
    m = runs.finished_metrics(run_dir, run_config) or pipeline.train_and_evaluate(
        run_config, run_dir, stage="fden", ali_dir=ali_dir, show_progress=False, export=False, data=data)
    results["fden"][name] = fden_row(run_dir, m)
    print(f"FDEN {name}: {json.dumps(results['fden'][name])}", flush=True)
  results["wall_seconds_this_invocation"] = time.time() - start
  table = markdown(results)
  files.write_json(os.path.join(output_dir, "results.json"), results)
  files.atomic_write(os.path.join(output_dir, "results.md"), lambda fh: fh.write(table))
  print(table)
  print(f"wrote {output_dir}/results.json and results.md ({results['wall_seconds_this_invocation'] / 60:.1f} min)")


if __name__ == "__main__":
  app.run(main)
