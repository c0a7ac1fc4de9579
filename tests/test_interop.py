"""Researchers' own files: mergekit configs out and in, and a lab from a plain folder (lab init).

mergekit itself is not installed here (bench/merge.py --yaml-check runs it on these configs); the
written config is checked by reading it as mergekit's formula does (θ_0 + λ Σ w_i τ_i, filters by tensor
name) over LoRA experts baked by PEFT, independently of mixlab's merge code."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mixlab.cli import main
from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.interop.lab_init import init_lab
from mixlab.interop.mergekit import lab_from_mergekit, to_mergekit
from mixlab.lab import load_lab
from mixlab.scoring import cached as cached_scores
from mixlab.store import Store


def _baked(ref: str) -> dict[str, torch.Tensor]:
    """A mergekit model reference as mergekit loads it: a folder, or base+adapter baked by PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_path, _, lora = ref.partition("+")
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32)
    if lora:
        model = PeftModel.from_pretrained(model, lora).merge_and_unload()
    return {k: v.detach().float() for k, v in model.state_dict().items()}


def _mergekit_task_arithmetic(config: dict) -> dict[str, torch.Tensor]:
    """mergekit's task_arithmetic (its generalized_task_arithmetic without sparsification or consensus)."""
    base = _baked(config["base_model"])
    lam = config.get("parameters", {}).get("lambda", 1.0)
    out = {k: v.clone() for k, v in base.items()}
    for m in config["models"]:
        theta, w = _baked(m["model"]), m["parameters"]["weight"]
        for k in out:
            if isinstance(w, list):  # [{filter, value}, …, {value}]: the first filter found in the name wins
                wk = next(c["value"] for c in w if "filter" not in c or c["filter"] in k)
            else:
                wk = w
            out[k] += lam * wk * (theta[k] - base[k])
    return out


@pytest.mark.parametrize("method,params", [("linear", {}), ("task_arithmetic", {"scale": 0.7})])
def test_the_mergekit_config_reproduces_the_merge(tiny_lab_dir, tmp_path, method, params):
    (tiny_lab_dir / "lab.toml").write_text(
        (tiny_lab_dir / "lab.toml").read_text() + '\n[merge]\nexclude = ["*embed_tokens*", "lm_head.weight"]\n'
    )
    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    mixture = engine.mixture([0.2, 0.8, 0.0])
    text, notes = to_mergekit(engine, mixture, method, params)
    config = yaml.safe_load(text)
    assert config["merge_method"] == "task_arithmetic" and config["parameters"]["normalize"] is False
    assert [m["model"] for m in config["models"]] == [  # the zero-weight expert is left out
        f"{tiny_lab_dir / 'base'}+{tiny_lab_dir / 'experts' / n}" for n in ("add", "rev")
    ]
    assert text.startswith("# mergekit config written by mixlab") and all(f"# note: {n}" in text for n in notes)
    assert any("exact names" in n for n in notes) and any("--lora-merge-cache" in n for n in notes)
    reference = _mergekit_task_arithmetic(config)
    out = engine.export(mixture, tmp_path / "ours", method, params)
    ours = {k: v.float() for k, v in load_file(out / "model.safetensors").items()}
    assert set(ours) <= set(reference)
    for k, v in ours.items():
        torch.testing.assert_close(v, reference[k], rtol=1e-5, atol=1e-6, msg=k)
    base = load_file(tiny_lab_dir / "base" / "model.safetensors")
    assert torch.equal(ours["model.embed_tokens.weight"], base["model.embed_tokens.weight"].float())


def test_ties_and_dare_configs_carry_their_parameters_and_caveats(tiny_lab_dir):
    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    m = engine.mixture([0.2, 0.3, 0.5])
    ties, notes = to_mergekit(engine, m, "ties", {"density": 0.4, "normalize": False, "scale": 1.5})
    config = yaml.safe_load(ties)
    assert config["merge_method"] == "ties" and config["parameters"] == {"normalize": False, "lambda": 1.5}
    assert [x["parameters"] for x in config["models"]] == [{"weight": w, "density": 0.4} for w in (0.2, 0.3, 0.5)]
    assert any("sign election" in n for n in notes)
    dare = yaml.safe_load(to_mergekit(engine, m, "dare_ties", {"drop_rate": 0.75, "seed": 3})[0])
    assert dare["merge_method"] == "dare_ties" and dare["models"][0]["parameters"]["density"] == 0.25
    assert "only in expectation" in to_mergekit(engine, m, "dare_linear", {})[0]


def test_a_lab_from_a_mergekit_config_and_back(tiny_lab_dir, tmp_path, capsys):
    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    config = tmp_path / "recipe.yml"
    m = engine.mixture([0.2, 0.3, 0.5])
    config.write_text(to_mergekit(engine, m, "ties", {"density": 0.4, "scale": 1.2})[0])
    (tiny_lab_dir / "lab.toml").unlink()  # the folder of models alone, as a mergekit user has it
    assert main(["lab", "from-mergekit", str(config), "--name", "from-mk"]) == 0, capsys.readouterr().err
    lab = load_lab(tiny_lab_dir)
    assert lab.root == tiny_lab_dir.resolve()  # the folder that holds every model
    assert (lab.name, lab.expert_names) == ("from-mk", ["add", "rev", "sort"])
    assert [e.path for e in lab.manifest.experts] == ["experts/add", "experts/rev", "experts/sort"]
    assert lab.manifest.merge.method == "ties"
    assert lab.manifest.merge.params == {"density": 0.4, "normalize": True, "scale": 1.2}
    assert "# its mixture: add=0.2, rev=0.3, sort=0.5" in (tiny_lab_dir / "lab.toml").read_text()
    again = Engine(lab, Store(":memory:"), device="cpu")
    assert yaml.safe_load(to_mergekit(again, m)[0]) == yaml.safe_load(config.read_text())  # round trip
    with pytest.raises(MixlabError, match="exists; move it away first"):
        lab_from_mergekit(config)
    hub = tmp_path / "hub.yml"
    hub.write_text("merge_method: linear\nbase_model: meta-llama/Llama-3-8B\nmodels:\n  - model: org/x\n")
    with pytest.raises(MixlabError, match="not a local folder; mixlab loads nothing from a hub"):
        lab_from_mergekit(hub)


def _plain_folder(tiny_root, tmp_path):
    """What a researcher brings: a base, two PEFT adapters, something else, and JSONL of three shapes."""
    root = tmp_path / "mine"
    shutil.copytree(tiny_root / "base", root / "base")
    for name in ("add", "rev"):
        shutil.copytree(tiny_root / "experts" / name, root / "adapters" / name)
    (root / "adapters" / "notes").mkdir()
    (root / "evals").mkdir()
    shutil.copy(tiny_root / "data" / "rev.jsonl", root / "evals" / "rev.jsonl")  # prompt, answer, completion
    shutil.copy(tiny_root / "data" / "rev.jsonl", root / "evals" / "rev_dev.jsonl")
    shutil.copy(tiny_root / "data" / "pick.jsonl", root / "evals" / "pick.jsonl")  # prompt, choices, label
    with open(root / "evals" / "prose.jsonl", "w") as f:
        f.write(json.dumps({"text": "abc def"}) + "\n")
    return root


def test_lab_init_from_plain_peft_adapters_and_everything_works_on_it(tiny_root, tmp_path, capsys):
    root = _plain_folder(tiny_root, tmp_path)
    argv = ["lab", "init", str(root), "--base", "base", "--experts", "adapters/*", "--benchmarks", "evals/*.jsonl"]
    assert main(argv) == 0, capsys.readouterr().err
    text = (root / "lab.toml").read_text()
    assert "# skipped adapters/notes: neither a PEFT adapter nor a full fine-tune" in text
    assert "[[experts]]  # PEFT LoRA adapter" in text
    assert '[[benchmarks]]  # rows have prompt and answer: greedy generation, exact match\nname = "rev"' in text
    assert 'search_data = "evals/rev_dev.jsonl"' in text
    lab = load_lab(root)
    assert lab.expert_names == ["add", "rev"]
    assert {b.name: b.evaluator for b in lab.benchmarks} == {"pick": "choice", "prose": "lm_loss", "rev": "exact_match"}
    assert main(["info", str(root)]) == 0
    assert "rev              lora" in capsys.readouterr().out
    assert main(["eval", str(root), "--weights", "1/3,2/3", "--benchmark", "pick", "--json"]) == 0
    (score,) = json.loads(capsys.readouterr().out)
    assert score["benchmark"] == "pick" and 0 <= score["score"] <= 1
    out = tmp_path / "exported"
    assert (
        main(
            ["merge", str(root), "--weights", "0.5,0.5", "--out", str(out), "--mergekit-yaml", str(tmp_path / "m.yml")]
        )
        == 0
    )
    assert (out / "README.md").is_file() and (out / "mixlab.json").is_file()
    assert yaml.safe_load((tmp_path / "m.yml").read_text())["base_model"] == str(root / "base")
    with pytest.raises(MixlabError, match="exists; move it away first"):
        init_lab(root, "base", "adapters/*", "evals/*.jsonl")


def test_lab_init_says_what_it_cannot_use(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    with pytest.raises(MixlabError, match="--base nowhere: no config.json and \\*.safetensors"):
        init_lab(root, "nowhere")
    with pytest.raises(MixlabError, match="no experts under .* match 'experts/\\*'"):
        init_lab(root, "base", "experts/*")
    with open(root / "evals" / "odd.jsonl", "w") as f:
        f.write(json.dumps({"question": "?", "gold": "!"}) + "\n")
    with pytest.raises(
        MixlabError, match="odd.jsonl: cannot tell the evaluator from its fields \\['gold', 'question'\\]"
    ):
        init_lab(root, "base", "adapters/*", "evals/*.jsonl")
    assert not (root / "lab.toml").exists()


def _mergekit_lab(tiny_lab_dir, tmp_path, where):
    """A recipe of the tiny lab's models in ``where`` (the lab.toml removed: the models alone)."""
    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    where.mkdir(parents=True, exist_ok=True)
    config = where / "recipe.yml"
    config.write_text(to_mergekit(engine, engine.mixture([0.2, 0.3, 0.5]))[0])
    (tiny_lab_dir / "lab.toml").unlink()
    return config


def test_lab_init_folder_names_cannot_inject_toml(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    (root / "adapters" / '0\nplugins = ["adapters"]\n#').mkdir()  # skipped (not an adapter): named in a comment
    init_lab(root, "base", "adapters/*", "evals/*.jsonl")
    lab = load_lab(root)
    assert lab.manifest.plugins == []  # nothing after the newline became TOML
    assert '# skipped adapters/0\\nplugins = ["adapters"]\\n#: neither' in (root / "lab.toml").read_text()


def test_lab_init_names_odd_expert_folders_and_keeps_their_paths(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    shutil.copytree(root / "adapters" / "rev", root / "adapters" / 'z"\n[x]')
    init_lab(root, "base", "adapters/*", "evals/*.jsonl")
    lab = load_lab(root)
    assert lab.expert_names == ["add", "rev", "z---x-"]  # a name holds letters, digits, _ and -
    assert lab.manifest.experts[2].path == 'adapters/z"\n[x]'  # the path exactly, escaped in the file


def test_a_mergekit_recipes_path_cannot_inject_toml(tiny_lab_dir, tmp_path):
    config = _mergekit_lab(tiny_lab_dir, tmp_path, tmp_path / 'r\nplugins = ["experts"]\n#')
    lab_from_mergekit(config, out=tiny_lab_dir)
    lab = load_lab(tiny_lab_dir)
    assert lab.manifest.plugins == [] and lab.expert_names == ["add", "rev", "sort"]


def test_lab_init_never_writes_through_a_dangling_lab_toml_link(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    outside = tmp_path / "outside" / "lab.toml"
    outside.parent.mkdir()
    (root / "lab.toml").symlink_to(outside)
    with pytest.raises(MixlabError, match="lab.toml is a link; move it away first"):
        init_lab(root, "base", "adapters/*", "evals/*.jsonl")
    assert not outside.exists() and (root / "lab.toml").is_symlink()


def test_from_mergekit_without_out_needs_a_folder_that_can_be_a_lab(tiny_lab_dir, tmp_path):
    config = _mergekit_lab(tiny_lab_dir, tmp_path, tmp_path)
    far = tmp_path / "far" / "away" / "down"
    shutil.move(tiny_lab_dir / "experts" / "sort", far / "sort")  # the common folder is now tmp_path
    text = config.read_text().replace(str(tiny_lab_dir / "experts" / "sort"), str(far / "sort"))
    config.write_text(text)
    with pytest.raises(MixlabError, match="4 levels above a model .* Pass --out LAB"):
        lab_from_mergekit(config)
    assert not (tmp_path / "lab.toml").exists()
    config.write_text(text.replace(f"base_model: {tiny_lab_dir / 'base'}", "base_model: /usr"))
    with pytest.raises(MixlabError, match="holds every model is /, the filesystem root; it cannot be the lab folder"):
        lab_from_mergekit(config)


def test_lab_init_reads_at_most_a_mebibyte_of_a_first_row(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    with open(root / "evals" / "huge.jsonl", "w") as f:
        f.write(json.dumps({"text": "a" * (1 << 20)}) + "\n")
    with pytest.raises(MixlabError, match="huge.jsonl: the first row is longer than 1048576 bytes"):
        init_lab(root, "base", "adapters/*", "evals/*.jsonl")


@pytest.mark.parametrize(
    "recipe, match",
    [
        ("base_model: B\nmodels:\n  - &a {model: E}\n  - *a\n", r"line 4: YAML aliases \(\*name\) are not accepted"),
        ("base_model: B\nmodels:\n  - parameters: {weight: 1}\n", r"models\[0\]: expected a model path or a mapping"),
        ("base_model: B\nmodels:\n  - model: E\n    parameters: [1]\n", r"models\[0\].parameters: expected a mapping"),
        ("base_model: B\nmodels:\n  - model: [E]\n", r"models\[0\].model: expected a path, got list"),
        ("base_model: [B]\nmodels:\n  - model: E\n", r"base_model: expected a folder path, got \['/"),
        ("base_model: B\nmodels:\n  - model: E\nparameters: 3\n", "parameters: expected a mapping, got int"),
        ("base_model: B\nmodels: 3\n", r"not a mergekit config \(no models: list\)"),
    ],
)
def test_malformed_mergekit_recipes_are_named_errors(tiny_lab_dir, tmp_path, recipe, match):
    config = tmp_path / "recipe.yml"
    config.write_text(
        recipe.replace("B", str(tiny_lab_dir / "base")).replace("E", str(tiny_lab_dir / "experts" / "add"))
    )
    with pytest.raises(MixlabError, match=match):
        lab_from_mergekit(config, out=tiny_lab_dir)


def test_merge_mergekit_yaml_naming_a_folder_is_a_clear_error(tiny_lab_dir, tmp_path, capsys):
    argv = ["merge", str(tiny_lab_dir), "--weights", "0.2,0.3,0.5", "--mergekit-yaml", str(tmp_path)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert f"--mergekit-yaml {tmp_path} is a folder; give a file name" in err and "unexpected" not in err


def _readme_block(heading: str) -> list[list[str]]:
    """The ``mixlab …`` commands of the first bash block under ``heading`` in the README, split as a shell would."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index(heading) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("mixlab ")]


def test_the_readme_bring_your_own_block_runs_as_written(tmp_path, capsys, monkeypatch):
    """The README's bring-your-own commands, run as written on a folder of the shape it describes (a tiny
    Llama saved with save_pretrained, PEFT adapters at any depth, three true-mixture adapters and their
    example counts in a CSV): the lab they make has named experts, normalised true mixtures, and a report
    with Proxy vs true over all three."""
    from checkpoints import FAMILIES, build_base, build_lora

    from mixlab.demo.tasks import examples

    family, lab = FAMILIES["llama"], tmp_path / "my-lab"
    build_base(family, lab / "base")
    build_lora(family, lab / "base", lab / "runs" / "ocr-run" / "adapter-ocr", seed=1)
    build_lora(family, lab / "base", lab / "runs" / "adapter-chart", seed=2)
    for i in range(3):
        build_lora(family, lab / "base", lab / "true" / f"mix{i}", seed=10 + i)
    (lab / "mixtures.csv").write_text("checkpoint,ocr,chart\nmix0,100,300\nmix1,1/2,1/2\ntrue/mix2,3,1\n")
    (lab / "data").mkdir()
    with open(lab / "data" / "rev.jsonl", "w") as f:
        for prompt, answer in examples("rev", 6, 3):
            f.write(json.dumps({"prompt": prompt, "completion": answer}) + "\n")
    monkeypatch.chdir(tmp_path)
    commands = _readme_block("## Bring your own base, adapters and JSONL")
    assert [c[1] for c in commands] == ["lab", "info", "sweep", "sweep", "report"]
    for argv in commands:
        assert main(argv[1:]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    manifest = load_lab(lab).manifest
    assert [(e.name, e.path) for e in manifest.experts] == [
        ("chart", "runs/adapter-chart"),
        ("ocr", "runs/ocr-run/adapter-ocr"),
    ]
    weights = {t.name: t.weights for t in manifest.true_mixtures}
    assert weights == {
        "mix0": {"chart": 0.75, "ocr": 0.25},
        "mix1": {"chart": 0.5, "ocr": 0.5},
        "mix2": {"chart": 0.25, "ocr": 0.75},
    }
    (line,) = [ln for ln in out.splitlines() if ln.startswith("rev ")]
    n, rho = line.split()[1:3]
    assert n == "3" and -1 <= float(rho) <= 1  # Spearman ρ over the 3 true mixtures


def test_lab_init_names_and_weights_say_what_is_wrong(tiny_root, tmp_path):
    root = _plain_folder(tiny_root, tmp_path)
    with pytest.raises(MixlabError, match="--name nope=…: no expert folder of that name; expert folders: add, rev"):
        init_lab(root, "base", names={"nope": "x"})
    shutil.copytree(tiny_root / "experts" / "sort", root / "true" / "m")
    with pytest.raises(MixlabError, match="--true: no weights for m; give --weights-from FILE"):
        init_lab(root, "base", "adapters/*", true="true/*")
    (root / "w.json").write_text(json.dumps({"m": {"add": 1, "zzz": 1}}))
    with pytest.raises(MixlabError, match="'m' names expert 'zzz'; experts: add, rev"):
        init_lab(root, "base", "adapters/*", true="true/*", weights_from="w.json")
    (root / "w.json").write_text(json.dumps({"other": {"add": 1}}))
    with pytest.raises(MixlabError, match="no weights for the true-mixture checkpoint true/m"):
        init_lab(root, "base", "adapters/*", true="true/*", weights_from="w.json")
    (root / "w.json").write_text(json.dumps({"m": {"add": "1/3", "rev": "2/3"}}))
    text = init_lab(root, "base", true="true/*", weights_from="w.json", write=False)
    assert 'path = "true/m"' in text and "[[true_mixtures]]  # weights from w.json\n" in text
    assert "true/m" not in text.split("[[true_mixtures]]")[0]  # a true mixture is not also an expert
    assert not (root / "lab.toml").exists()
    shutil.copytree(tiny_root / "experts" / "sort", tmp_path / "elsewhere")
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # found by the search, refused as outside the lab
    with pytest.raises(MixlabError, match="expert .*elsewhere is outside the lab folder"):
        init_lab(root, "base", true="true/*", weights_from="w.json", write=False)


def test_lab_init_reads_the_mixture_llama_factory_recorded(tiny_root, tmp_path):
    """LLaMA-Factory's board writes training_args.yaml into each run's folder: the experts' name one dataset
    each, a mixed run its datasets with interleave_probs; concat mixing (shares = dataset sizes) is refused."""
    root = _plain_folder(tiny_root, tmp_path)
    (root / "adapters" / "add" / "training_args.yaml").write_text("stage: sft\ndataset: add_sft\n")
    (root / "adapters" / "rev" / "training_args.yaml").write_text("stage: sft\ndataset: rev_sft\n")
    mix = root / "true" / "mix"
    shutil.copytree(tiny_root / "experts" / "sort", mix)
    (mix / "training_args.yaml").write_text(
        "dataset: rev_sft, add_sft\nmix_strategy: interleave_under\ninterleave_probs: 0.75,0.25\n"
    )
    text = init_lab(root, "base", "adapters/*", true="true/*", write=False)
    assert "[[true_mixtures]]  # weights from training_args.yaml\n" in text
    assert "weights = { add = 0.25, rev = 0.75 }" in text
    (mix / "training_args.yaml").write_text("dataset: rev_sft,add_sft\n")
    with pytest.raises(MixlabError, match="mixed by 'concat' without one interleave_probs each"):
        init_lab(root, "base", "adapters/*", true="true/*", write=False)
    (mix / "training_args.yaml").unlink()
    with pytest.raises(MixlabError, match="no weights for mix; give --weights-from FILE"):
        init_lab(root, "base", "adapters/*", true="true/*", write=False)


def test_the_readme_vision_language_block_runs_as_written(tmp_path, capsys, monkeypatch):
    """The README's vision-language bring-your-own commands, run as written on a folder of that shape: a
    tiny Qwen2-VL saved with save_pretrained (its image processor and tokenizer beside it), PEFT adapters on
    the language model, three true-mixture adapters weighted by a CSV, an image benchmark inside the lab.
    Its answers are what plain transformers + PEFT's merge_and_unload of the true mixture mix0 answer, so
    mixlab's true score of mix0 must be 1.0; the report has Proxy vs true over all three."""
    from checkpoints import FAMILIES, build_base, build_lora, load, qwen_image_answers, save_image_processor
    from peft import PeftModel
    from PIL import Image

    family, lab = FAMILIES["qwen2_vl"], tmp_path / "my-vl-lab"
    build_base(family, lab / "base")
    save_image_processor(family, lab / "base")
    for i, name in enumerate(("ocr", "chart")):
        build_lora(family, lab / "base", lab / "experts" / name, seed=1 + i)
    for i in range(3):
        build_lora(family, lab / "base", lab / "true" / f"mix{i}", seed=10 + i)
    (lab / "mixtures.csv").write_text("checkpoint,ocr,chart\nmix0,100,300\nmix1,1/2,1/2\nmix2,3,1\n")
    (lab / "images").mkdir()
    pictures = []
    for i, colour in enumerate([(220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 30)]):
        pictures.append(lab / "images" / f"{i}.png")
        Image.new("RGB", (16, 16), colour).save(pictures[-1])
    mix0 = PeftModel.from_pretrained(load(family, lab / "base"), lab / "true" / "mix0").merge_and_unload()
    answers = qwen_image_answers(mix0, lab / "base", pictures, "shape:", max_new_tokens=32)  # lab.toml's default
    (lab / "data").mkdir()
    with open(lab / "data" / "colour.jsonl", "w") as f:
        for i, a in enumerate(answers):
            f.write(json.dumps({"image": f"images/{i}.png", "prompt": "shape:", "answer": a}) + "\n")
    monkeypatch.chdir(tmp_path)
    commands = _readme_block("**A vision-language lab**")
    assert [c[1] for c in commands] == ["lab", "info", "eval", "sweep", "sweep", "report"]
    for argv in commands:
        assert main(argv[1:]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    loaded = load_lab(lab)
    assert [e.name for e in loaded.manifest.experts] == ["chart", "ocr"]
    assert loaded.manifest.merge.preset == "lora"
    assert {t.name: t.weights for t in loaded.manifest.true_mixtures}["mix0"] == {"chart": 0.75, "ocr": 0.25}
    true = {e.label: e.score for e in cached_scores.cached(Engine(loaded, device="cpu"), "true")}
    assert true["mix0"] == 1.0 and set(true) == {"mix0", "mix1", "mix2"}
    report = out[out.index("proxy (linear) vs true mixtures in my-vl-lab") :]
    (line,) = [ln for ln in report.splitlines() if ln.startswith("colour ")]
    assert line.split()[1] == "3" and "of 3" in line  # Proxy vs true over the 3 true mixtures, the proxy's pick


def test_the_dashboard_makes_labs_only_inside_the_workspace(tmp_path, monkeypatch):
    from mixlab.interop.lab_init import NoWorkspace, workspace_folder

    space = tmp_path / "space"
    (space / "mine").mkdir(parents=True)
    (space / "out").symlink_to(tmp_path, target_is_directory=True)  # a link inside that leads outside
    monkeypatch.delenv("MIXLAB_WORKSPACE", raising=False)
    with pytest.raises(NoWorkspace, match=r"only inside \$MIXLAB_WORKSPACE, which was not set"):
        workspace_folder(str(space / "mine"))
    monkeypatch.setenv("MIXLAB_WORKSPACE", str(space))
    assert workspace_folder(str(space / "mine")) == (space / "mine").resolve()
    assert workspace_folder(str(space / "mine" / ".." / "mine" / "new")) == (space / "mine" / "new").resolve()
    for outside in (tmp_path, space / ".." / "x", space / "out" / "mine", ""):
        with pytest.raises(MixlabError, match="is not inside the workspace") as e:
            workspace_folder(str(outside) if outside != "" else "")
        assert not isinstance(e.value, NoWorkspace)
