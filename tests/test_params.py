"""RecallParams describes each option once: the command line is generated from its fields'
metadata, validation names the same flags, and the implementation registries accept exactly
the names the options offer."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from recall_dask import choices
from recall_dask.cli_options import add_recall_options
from recall_dask.errors import InputError
from recall_dask.params import RecallParams, flag

ON_THE_COMMAND_LINE = [spec for spec in fields(RecallParams) if spec.metadata["help"]]


def _parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_recall_options(parser)
    return parser.parse_args(list(argv))


def test_every_option_but_the_fixed_seurat_constants_is_on_the_command_line():
    names = {spec.name for spec in ON_THE_COMMAND_LINE}
    assert names == {spec.name for spec in fields(RecallParams)} - {"target_sum", "scale_max"}


def test_command_line_defaults_and_types_are_the_fields():
    args = _parsed()
    for spec in ON_THE_COMMAND_LINE:
        assert getattr(args, spec.name) == spec.default
    args = _parsed("--n-hvg", "300", "--snn-prune", "0.25", "--neighbors", "exact")
    assert (args.n_hvg, args.snn_prune, args.neighbors) == (300, 0.25, "exact")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "split"}, "--method must be one of recall, countsplit (got split)"),
        ({"neighbors": "hnsw"}, "--neighbors must be one of annoy, exact (got hnsw)"),
        ({"fdr": 1.5}, "--fdr must be in (0, 1) (got 1.5)"),
        ({"snn_prune": 1.0}, "--snn-prune must be in [0, 1) (got 1.0)"),
        ({"k_neighbors": 1}, "--k-neighbors must be >= 2 (got 1)"),
        ({"draws": True}, "--draws must be a positive integer (got True)"),
        ({"n_pcs": 5}, "--dims must not exceed the number of PCs (got 10)"),
    ],
)
def test_a_bad_value_is_one_message_naming_its_flag(options, message):
    with pytest.raises(InputError) as error:
        RecallParams(**options)
    assert str(error.value) == message


def test_the_command_line_offers_the_flags_and_choices_that_validation_names():
    parser = argparse.ArgumentParser()
    add_recall_options(parser)
    offered = {action.option_strings[-1]: action for action in parser._actions}
    for spec in ON_THE_COMMAND_LINE:
        action = offered[flag(spec.name)]
        assert action.dest == spec.name
        assert action.choices == spec.metadata["choices"]
        assert spec.metadata["help"] in action.help


def test_implementation_registries_take_the_names_the_options_offer():
    from recall_dask.dask_cluster import _CLUSTERS
    from recall_dask.graph import NEIGHBOR_SEARCHES
    from recall_dask.methods import METHODS

    assert tuple(METHODS) == choices.METHODS
    assert tuple(NEIGHBOR_SEARCHES) == choices.NEIGHBOR_SEARCHES
    assert tuple(_CLUSTERS) == choices.CLUSTER_KINDS


MISSES = {
    "defaults": ({}, []),
    "nb-copula": ({"null_method": "nb-copula"}, []),
    "R's null": (
        {"null_method": "zip", "depth": "none"},
        ["--depth none with --null-method zip", "--null-method zip: its counts"],
    ),
    "nb blind to depth": ({"depth": "none"}, ["--depth none with --null-method nb"]),
    "zip with depth": ({"null_method": "zip"}, ["--null-method zip: its counts"]),
    "poisson blind to depth": (
        {"null_method": "poisson", "depth": "none"},
        ["--null-method poisson: its counts"],
    ),
    "gaussian-copula": ({"null_method": "gaussian-copula"}, ["--null-method gaussian-copula"]),
    "gaussian-copula, R's depth": (
        {"null_method": "gaussian-copula", "depth": "none"},
        ["--depth none with --null-method gaussian-copula", "--null-method gaussian-copula"],
    ),
    "countsplit defaults": ({"method": "countsplit"}, ["--method countsplit"]),
    "R's count split": (
        {"method": "countsplit", "split": "poisson", "depth": "none"},
        ["--method countsplit"],
    ),
}


@pytest.mark.parametrize(("options", "starts"), MISSES.values(), ids=MISSES.keys())
def test_options_measured_to_miss_say_so(options, starts):
    misses = list(RecallParams(**options).misses())
    assert [miss[: len(start)] for miss, start in zip(misses, starts, strict=True)] == starts
    assert all("; use " in miss or "; prefer " in miss for miss in misses)
