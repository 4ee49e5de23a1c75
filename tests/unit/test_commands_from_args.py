"""`from_args`: a command's options -> its library dataclass, by field name."""

import argparse
from dataclasses import dataclass, field

import pytest

from tte_scale.commands import from_args


@dataclass
class Job:
    out: str
    batch_size: int = 8
    splits: tuple = ()
    env: dict = field(default_factory=dict)


def test_fields_come_from_same_named_options_and_given_values_win():
    args = argparse.Namespace(out="o", batch_size=3, splits="a,b", env=["K=V"], unrelated=1)
    job = from_args(Job, args, splits=("a", "b"), env={"K": "V"})
    assert job == Job(out="o", batch_size=3, splits=("a", "b"), env={"K": "V"})


def test_missing_or_none_option_keeps_the_default_and_a_misspelt_field_is_refused():
    assert from_args(Job, argparse.Namespace(out="o")) == Job(out="o")
    assert from_args(Job, argparse.Namespace(out="o", batch_size=None)) == Job(out="o")
    with pytest.raises(TypeError, match=r"has no field\(s\) \['batchsize'\]"):
        from_args(Job, argparse.Namespace(out="o"), batchsize=2)
