"""The README and docs/*.md say only what is true of the code: their Python blocks run, and every flag, script,
page and anchor they name exists.

* Python blocks: every ```python block of README.md runs, as written, in a temporary working directory. A
  block that trains names the `smoke` preset (`PRESET = "smoke"`, the README's contract); to keep this test
  at seconds, the test swaps `config.PRESETS["smoke"]` for a smaller smoke run (`_tiny_smoke`: 30 FDEN steps,
  50 test episodes, small metrics), skips the static figures and the projector (tested elsewhere), and then
  checks that the block really trained with the swapped preset. The ```python
  blocks of docs/*.md run too, except docs/serving.md's (they call a TF Serving server;
  tests/test_export.py runs them verbatim against the loaded SavedModel). A `print(...)  # expected` line
  must print exactly what its comment says.
* Flags: every `--flag` in README.md and docs/*.md must be defined by a script (`flags.DEFINE_*` in
  scripts/*.py or benchmarks/*.py, read with `ast`, booleans also as `--noflag`), be absl's own
  (`--flagfile`, `--verbosity`, ...), or be one of the few other tools' flags in `OTHER_TOOLS`. On a command
  line that runs `scripts/X.py` or `benchmarks/X.py`, each flag must be X's own (or absl's) and an enum
  flag's value one of its choices.
* Paths: every `scripts/X.py`, `benchmarks/X.py`, `fden_tf/X.py`, `tests/X.py` and `docs/X` named must
  exist, and every relative Markdown link must reach a file and, with `#anchor`, a heading of that file.

`test_the_checker_catches_*` feed the checker made-up flags, values, paths and anchors: it must report each.
"""

import ast
import contextlib
import glob
import io
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PAGES = [README] + DOCS
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py")) + glob.glob(os.path.join(ROOT, "benchmarks",
                                                                                             "*.py")))
# Flags absl defines itself (absl.flags' special flags, absl.app's help flags, absl.logging's flags).
ABSL = {"flagfile", "undefok", "help", "helpfull", "helpshort", "helpxml", "only_check_args", "pdb",
        "pdb_post_mortem", "run_with_pdb", "run_with_profiling", "profile_file", "use_cprofile_for_profiling",
        "verbosity", "v", "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold", "showprefixforinfo",
        "logger_levels"}
# Flags of other tools the docs show: TensorBoard, TF Serving's model server, docker, saved_model_cli.
OTHER_TOOLS = {"logdir": "tensorboard", "model_config_file": "tensorflow_model_server",
               "model_config_file_poll_wait_seconds": "tensorflow_model_server", "rm": "docker run",
               "all": "saved_model_cli show", "maxprocesses": "pytest (xdist)", "dist": "pytest (xdist)"}
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)(?:=(\S+))?")
COMMAND = re.compile(r"\b((?:scripts|benchmarks)/\w+\.py)\b")
PATH = re.compile(r"(?<![\w/.])((?:scripts|benchmarks|fden_tf|tests)/[\w/]+\.py|docs/[\w.-]+\.\w+)")
LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def script_flags(path):
  """{flag name: enum choices or None} that `path` defines with flags.DEFINE_* (read, not imported)."""
  defined = {}
  for node in ast.walk(ast.parse(_read(path))):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("DEFINE_") and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      continue
    name, kind = node.args[0].value, node.func.attr
    choices = None
    if kind == "DEFINE_enum" and len(node.args) > 2 and isinstance(node.args[2], (ast.List, ast.Tuple)):
      choices = {e.value for e in node.args[2].elts if isinstance(e, ast.Constant)}
    defined[name] = choices
    if kind == "DEFINE_boolean" or kind == "DEFINE_bool":
      defined["no" + name] = None
  return defined


def all_script_flags():
  return {os.path.relpath(p, ROOT): script_flags(p) for p in SCRIPTS}


def _command_lines(text):
  """Shell command lines of the page's ```bash blocks, continuation lines joined, comments dropped."""
  lines = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    joined = re.sub(r"\\\n\s*", " ", block)
    lines += [line.split(" #")[0] for line in joined.splitlines()]
  return lines


def check_text(text, page_dir, flags_by_script, root=ROOT):
  """Problems in one page's text (flags, values, paths, links); `page_dir` resolves relative links."""
  problems = []
  known = set(ABSL) | set(OTHER_TOOLS)
  for defined in flags_by_script.values():
    known |= set(defined)
  for name, _ in FLAG.findall(text):
    if name not in known:
      problems.append(f"--{name} is defined by no script (scripts/*.py, benchmarks/*.py)")
  for line in _command_lines(text):
    scripts = COMMAND.findall(line)
    if not scripts or scripts[0] not in flags_by_script:
      continue
    own = flags_by_script[scripts[0]]
    arguments = re.sub(r'"[^"]*"', '""', line.split(scripts[0], 1)[1])  # a quoted command is another's
    for name, value in FLAG.findall(arguments):
      if name not in own and name not in ABSL:
        problems.append(f"{scripts[0]} has no flag --{name} (in: {line.strip()})")
      elif own.get(name) and value and value not in own[name]:
        problems.append(f"{scripts[0]} --{name}={value}: not one of {sorted(own[name])}")
  for path in set(PATH.findall(text)):
    if not os.path.exists(os.path.join(root, path)):
      problems.append(f"{path} does not exist")
  for target in [a or b for a, b in LINK.findall(text)]:
    if re.match(r"[a-z]+:", target):
      continue  # http(s), mailto
    file_part, _, anchor = target.partition("#")
    file_path = os.path.normpath(os.path.join(page_dir, file_part)) if file_part else None
    if file_path and not os.path.exists(file_path):
      problems.append(f"link {target}: {file_part} does not exist")
    elif anchor and (file_path is None or file_path.endswith(".md")):
      headings = _anchors(_read(file_path) if file_path else text)
      if anchor not in headings:
        problems.append(f"link {target}: no heading #{anchor}")
  return problems


def _anchors(text):
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"```.*?```", "", text, flags=re.S)
  slugs = set()
  for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
    slugs.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
  return slugs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_flag_path_and_link_a_page_names_exists(page):
  assert check_text(_read(page), os.path.dirname(page), all_script_flags()) == []


def test_the_checker_catches_a_made_up_flag_value_path_and_anchor():
  flags_by_script = all_script_flags()
  assert "made_up_flag" not in flags_by_script["scripts/train.py"]
  text = ("```bash\npython scripts/train.py --preset=smoke --made_up_flag=3\n"
          "python scripts/train.py --preset=no_such_preset\n"
          "python scripts/export.py --run_dir=runs/x --fden_steps=5\n```\n"
          "See `scripts/no_such_script.py`, [a page](docs/no_such_page.md) and [x](docs/training.md#nowhere).\n")
  problems = check_text(text, ROOT, flags_by_script)
  assert any("--made_up_flag is defined by no script" in p for p in problems), problems
  assert any("--preset=no_such_preset: not one of" in p for p in problems), problems
  assert any("scripts/export.py has no flag --fden_steps" in p for p in problems), problems  # train.py's
  assert any("scripts/no_such_script.py does not exist" in p for p in problems), problems
  assert any("docs/no_such_page.md does not exist" in p for p in problems), problems
  assert any("no heading #nowhere" in p for p in problems), problems
  # ... and nothing else, but twice where two checks see one mistake: --made_up_flag (no script defines it,
  # and train.py does not) and docs/no_such_page.md (a named path, and a link).
  assert len(problems) == 8, problems


def test_train_flag_choices_are_the_configs_own():
  """scripts/train.py spells its enum choices out (this checker reads them without importing the script);
  they must stay the names fden_tf/config.py knows, or a preset or option would be unreachable or refused."""
  from fden_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  train = script_flags(os.path.join(ROOT, "scripts", "train.py"))
  assert train["preset"] == set(config_lib.PRESETS)
  assert train["standardize_latents"] == {"none", *config_lib.STANDARDIZATIONS}
  assert train["fden_learning_rate_schedule"] == set(config_lib.LEARNING_RATE_SCHEDULES)


def test_the_checker_reads_booleans_enums_and_absl_flags():
  train = all_script_flags()["scripts/train.py"]
  assert {"noprogress", "noexport", "nooverwrite"} <= set(train)
  assert train["preset"] >= {"cpu", "smoke", "paper"}
  assert check_text("`python scripts/train.py --flagfile=my.flags --noprogress --preset=smoke`\n"
                    "```bash\npython scripts/train.py --flagfile=my.flags --noprogress --preset=smoke\n```\n",
                    ROOT, all_script_flags()) == []


def test_the_readme_keeps_the_set_up_commands_that_ci_runs():
  readme = _read(README)
  assert len(readme.splitlines()) <= 250
  assert '```bash\npip install -e ".[test]" && python -m pytest -q\n```' in readme
  assert "```bash\npip install -e . && python scripts/train.py\n```" in readme
  assert 'pip install -e ".[test]" && python -m pytest -q' in _read(os.path.join(ROOT, ".ci", "run"))


# ---------------------------------------------------------------------------------------------------------
# The Python blocks.


def _python_blocks(path):
  return re.findall(r"```python\n(.*?)```", _read(path), flags=re.S)


def _tiny_smoke():
  from fden_tf import config as config_lib
  return config_lib.smoke().replace(fden={"steps": 30, "eval_episodes": 50, "checkpoint_every": 1000},
                                    metrics_samples=100, metrics_mine_steps=10, metrics_translation_pairs=10)


def _run_block(block, tmp_path, monkeypatch):
  """Executes `block` in `tmp_path`; returns (its namespace, what it printed)."""
  monkeypatch.chdir(tmp_path)
  namespace, out = {"__name__": "__doc_block__"}, io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, "<doc block>", "exec"), namespace)  # pylint: disable=exec-used
  printed = out.getvalue()
  for expected in re.findall(r"^print\(.*\)\s+# (.+)$", block, flags=re.M):
    assert expected.strip() in printed.splitlines(), (expected, printed)
  return namespace, printed


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_python_blocks(README))))
def test_the_readme_python_blocks_run(index, tmp_path, monkeypatch):
  from fden_tf import config as config_lib
  block = _python_blocks(README)[index]
  trains = "train_and_evaluate" in block
  if trains:
    assert 'PRESET = "smoke"' in block, "a README block that trains must name the smoke preset"
    monkeypatch.setitem(config_lib.PRESETS, "smoke", _tiny_smoke)
    # Figure 3, the curves and the projector cost most of a tiny run; tests/test_train_script.py and
    # tests/test_summaries.py check them, so here they are skipped.
    from fden_tf import pipeline
    monkeypatch.setattr(pipeline, "_figures", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline, "write_projector", lambda *args, **kwargs: None)
  namespace, printed = _run_block(block, tmp_path, monkeypatch)
  if trains:
    metrics = namespace["metrics"]
    assert metrics["fewshot"]["episodes"] == 50 and metrics["fden_train"]["step"] == 30  # the swapped preset
    with open(tmp_path / "runs" / "mine" / "metrics.json") as f:
      assert json.load(f)["fewshot"] == metrics["fewshot"]
    assert printed.startswith("f_ide ")


DOC_BLOCKS = [(os.path.relpath(page, ROOT), i) for page in DOCS if not page.endswith("serving.md")
              for i in range(len(_python_blocks(page)))]


@pytest.mark.parametrize("page,index", DOC_BLOCKS, ids=[f"{p}-{i}" for p, i in DOC_BLOCKS])
def test_the_docs_python_blocks_run(page, index, tmp_path, monkeypatch):
  block = _python_blocks(os.path.join(ROOT, page))[index]
  assert "train_and_evaluate" not in block, "training examples belong in the README (smoke-sized)"
  _run_block(block, tmp_path, monkeypatch)
