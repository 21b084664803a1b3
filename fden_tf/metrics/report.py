"""A readable, plain-text report of `evaluate_models`'s results (what scripts/evaluate.py prints)."""


def _pct(x):
  return f"{100 * x:6.2f}%"


def _num(x, digits=4):
  return "   n/a" if x is None else f"{x:.{digits}f}"


def _alignment(a: dict) -> list:
  lines = [f"1. Identity alignment: {a['way']}-way {a['shot']}-shot nearest prototype, {a['episodes']} "
           f"episodes of unseen classes (chance {_pct(a['chance']).strip()})"]
  notes = {"f_ide": "the identity factor (higher is better)", "z": "the raw code, no FDEN",
           "f_sty": "identity leaking into style (lower is better)",
           "pixels": "the raw pixels, no network"}
  for name, note in ((name, note) for name, note in notes.items() if name in a):  # older files: no pixels
    lines.append(f"   {name:<6} {_pct(a[name]['accuracy'])} ± {_pct(a[name]['ci95']).strip():<7} {note}")
  return lines


def _independence(ind: dict) -> list:
  mi, dc = ind["mutual_information_nats"], ind["distance_correlation"]
  return [f"2. Independence of the factors (0 = independent; MI: {ind['mi_samples']} held-out samples, "
          f"{ind['mine_steps']} steps per statistician; distance correlation: {ind['dcor_samples']} samples)",
          f"   {'':<52} {'f_ide vs f_sty':>14} {'z halves':>9}",
          f"   {'mutual information, fresh DV statistician (nats)':<52} {_num(mi['f_ide_vs_f_sty']):>14} "
          f"{_num(mi['z_halves']):>9}",
          f"   {'  estimator floor: f_sty shuffled across samples':<52} "
          f"{_num(mi['f_ide_vs_shuffled_f_sty']):>14}",
          f"   {'bias-corrected distance correlation (R*)':<52} {_num(dc['f_ide_vs_f_sty']):>14} "
          f"{_num(dc['z_halves']):>9}"]


def _fidelity(fid: dict) -> list:
  lat, pix = fid["latent"], fid["pixel_mse"]
  return [f"3. Plug-in fidelity ({fid['samples']} held-out samples)",
          f"   ||z - z~||^2 / ||z||^2            {_num(lat['relative_error'])}   "
          f"(over the variance of z: {_num(lat['unexplained_variance'])})",
          f"   pixel MSE, G(z~) vs G(z)          {_num(pix['z_tilde_vs_z'])}   what plugging FDEN in changes",
          f"   pixel MSE, G(z~) vs x             {_num(pix['z_tilde_vs_image'])}",
          f"   pixel MSE, G(z)  vs x             {_num(pix['reconstruction'])}   the plugged network alone"]


def _mixing(mix: dict) -> list:
  row = lambda space: f"{_num(mix[space]['style_share'], 3):>8} {_num(mix[space]['identity_share'], 3):>9}"
  return [f"   mixing the factors of A and B ({mix['pairs']} pairs, other classes): how much of B - A swapping in",
          "   B's factor makes",
          f"   {'':<30} {'style':>8} {'identity':>9}   (0: the Entangler ignores that factor)",
          f"   {'in codes':<30} {row('latent')}",
          f"   {'in decoded images':<30} {row('pixels')}"]


def _ground_truth(gt: dict) -> list:
  style, probe, tr = gt["style_r2"], gt["identity_probe"], gt["translation"]
  names = list(style["f_sty"]["per_factor"])
  lines = ["4. Against the ground truth (glyphs)",
           f"   style R^2 (ridge; fit on {style['train_samples']} training-class samples, scored on "
           f"{style['test_samples']} unseen-class samples): f_sty high, f_ide low",
           "   " + f"{'':<7}{'mean':>7}" + "".join(f"{n[:12]:>13}" for n in names)]
  for rep in ("f_ide", "f_sty", "z"):
    lines.append("   " + f"{rep:<7}{style[rep]['mean']:7.3f}" +
                 "".join(f"{style[rep]['per_factor'][n]:13.3f}" for n in names))
  lines.append(f"   linear identity probe on {probe['classes']} unseen classes (chance "
               f"{_pct(probe['chance']).strip()}): f_sty {_pct(probe['f_sty']).strip()} (near chance is "
               f"better), f_ide {_pct(probe['f_ide']).strip()}, z {_pct(probe['z']).strip()}")
  lines.append(f"   translation G(E(f_ide^A, f_sty^B)) vs render(identity A, style B), {tr['pairs']} pairs:")
  lines.append(f"   {'':<6}{'translated':>12}{'no transl.':>12}{'ceiling':>10}{'rec of B':>10}{'score 0..1':>12}")
  for metric in ("mse", "ssim"):
    m = tr[metric]
    lines.append(f"   {metric.upper():<6}{m['translated']:12.4f}{m['no_translation']:12.4f}{m['ceiling']:10.4f}"
                 f"{m.get('wrong_identity', float('nan')):10.4f}{_num(m['score'], 3):>12}")
  if "class_mean_of_a_score" in tr["mse"]:
    ref = lambda name: f"{_num(tr['mse'][name], 3).strip()} / {_num(tr['ssim'][name], 3).strip()}"
    lines.append(f"   references that know the classes, score MSE / SSIM: A's class-mean code "
                 f"{ref('class_mean_of_a_score')}, class-mean arithmetic {ref('class_mean_analogy_score')}")
  return lines


def format_report(results: dict) -> str:
  """The results of `evaluate_models` / `evaluate_run` as aligned plain text, one section per metric family."""
  head = f"Disentanglement report: {results.get('run_dir', 'in memory')} ({results['dataset']})"
  lines = [head, ""] + _alignment(results["alignment"]) + [""] + _independence(results["independence"])
  lines += [""] + _fidelity(results["fidelity"])
  lines += (_mixing(results["mixing"]) if results.get("mixing") else []) + [""]
  if results.get("ground_truth"):
    lines += _ground_truth(results["ground_truth"])
  else:
    lines.append("4. Ground truth: not available for this dataset (only glyphs knows every sample's style)")
  seconds = sum(results.get("seconds", {}).values())
  lines += ["", f"({seconds:.1f} s)"]
  return "\n".join(lines)
