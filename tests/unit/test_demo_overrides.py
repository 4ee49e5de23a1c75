"""`tte-scale demo --set`: pretraining keys reach both training runs (issue 20: the demo with any
registered backbone, `--set model.name=densenet121_3d`)."""

from __future__ import annotations

from pathlib import Path

from tte_scale.commands.demo import DemoConfig, _stages, split_overrides


def test_pretraining_keys_go_to_the_training_runs():
    own, train = split_overrides(
        ["subjects=40", "model.name=densenet121_3d", "max_steps=3", "seed=2", "modle.name=x", "optim.lr=1e-3"]
    )
    assert own == [
        "subjects=40",
        "seed=2",
        "modle.name=x",
    ]  # seed is the demo's (it passes it on); typos stay to be refused
    assert train == ["model.name=densenet121_3d", "max_steps=3", "optim.lr=1e-3"]

    cfg = DemoConfig(pretrain_overrides=["max_steps=6", *train])
    stages = {name: argv for name, argv, _ in _stages(cfg, Path("out"))}
    for name in ("train", "supervised"):
        sets = [a for i, a in enumerate(stages[name]) if stages[name][i - 1] == "--set"]
        i = sets.index(train[0])
        assert sets[i : i + 3] == train and sets.index("max_steps=6") < sets.index("max_steps=3"), sets


def test_train_seed_and_cohort_from_reach_the_stages():
    cfg = DemoConfig(seed=0, train_seed=2, cohort_from="runs/first")
    stages = {name: argv for name, argv, _ in _stages(cfg, Path("out"))}
    assert stages["synth"][stages["synth"].index("--seed") + 1] == "0"  # the cohort keeps its seed
    assert stages["synth"][stages["synth"].index("--out") + 1] == str(Path("runs/first/cohort"))
    for name, sub in (("train", "pretrain"), ("supervised", "pretrain_supervised")):
        sets = [a for i, a in enumerate(stages[name]) if stages[name][i - 1] == "--set"]
        assert "seed=2" in sets and f"data.shards_dir={Path('runs/first/shards')}" in sets, sets
        assert f"out_dir={Path('out') / sub}" in sets, sets  # what it writes stays in its own folder
    ev = stages["eval"]
    assert ev[ev.index("--seed") + 1] == "2" and ev[ev.index("--labels") + 1] == str(Path("runs/first/labels"))
    assert ev[ev.index("--out") + 1] == str(Path("out/eval"))
    default = {name: argv for name, argv, _ in _stages(DemoConfig(seed=3), Path("out"))}
    assert default["eval"][default["eval"].index("--seed") + 1] == "3"  # train_seed unset: the cohort's seed
