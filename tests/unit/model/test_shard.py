"""Pipeline splits of the built model: what the optimizer stores, and that the chain computes the whole graph."""

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unison.config import load_settings
from unison.model import Predictor, PredictorOptions, Registry
from unison.model.runtime import create_session
from unison.model.shard import BOUNDARY_OPS, LocalStages, ShardError, split

TEXTS = ["I was charged twice for my subscription", "the app crashes when I open settings",
         "how do I export my data to CSV? " * 20, "refund"]
TOLERANCE = {"fp32": 1e-5, "int8": 1e-5, "fp16": 1e-2}


def _artifact(built_model: Any) -> Any:
    return Registry(built_model.registry_root).load(built_model.ref)


def _feeds(ids: list[int], features: np.ndarray) -> dict[str, np.ndarray]:
    row = np.asarray(ids, dtype=np.int64)[None, :]
    return {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": np.zeros_like(row),
            "features": features}


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_every_variant_stores_checked_two_and_three_stage_splits(built_model: Any, variant: str) -> None:
    artifact = _artifact(built_model)
    info = artifact.manifest.variants[variant]
    assert set(info.stages) == {"2", "3"}
    for k, specs in info.stages.items():
        assert len(specs) == int(k) and info.stage_check[k] <= TOLERANCE[variant]
        assert all(s.weight_bytes > 0 for s in specs)
        for spec in specs:  # the registry checksums the stage files like every other file
            assert spec.file in artifact.manifest.files
            assert all(f in artifact.manifest.files for f in spec.data_files)
        for before, after in itertools.pairwise(specs):  # what a stage reads comes from the caller or
            assert set(after.inputs) <= set(before.forward) | set(after.from_caller)  # the stage before it
        assert set().union(*(set(s.final) for s in specs)) == set(artifact.manifest.output_names())


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_the_chain_computes_what_the_whole_graph_computes(built_model: Any, variant: str) -> None:
    artifact = _artifact(built_model)
    info = artifact.manifest.variants[variant]
    whole = create_session(artifact.path / info.file, "cpu", 1)
    tokenizer_ids = [[101, 1045, 2001, 5338, 3807, 102], [101, *list(range(2000, 2100)), 102]]
    rng = np.random.default_rng(0)
    for k in ("2", "3"):
        chain = LocalStages(artifact.path, info.stages[k], artifact.manifest.output_names())
        for ids in tokenizer_ids:
            feeds = _feeds(ids, rng.random((1, 16), dtype=np.float32))
            for a, b in zip(whole.run(feeds), chain.run(feeds), strict=True):
                assert np.abs(np.asarray(a, np.float64) - b).max() <= TOLERANCE[variant]


def test_cuts_are_at_layer_boundaries(built_model: Any, tmp_path: Path) -> None:
    import onnx

    artifact = _artifact(built_model)
    path = artifact.path / artifact.manifest.variants["fp32"].file
    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    specs = split(path, 3, tmp_path / "k3", tmp_path)
    for spec in specs[:-1]:
        hidden = [t for t in spec.forward if producers.get(t) in BOUNDARY_OPS]
        assert hidden, f"no layer output among what {spec.file} forwards: {spec.forward}"


def test_impossible_splits_are_refused(built_model: Any, tmp_path: Path) -> None:
    artifact = _artifact(built_model)
    path = artifact.path / artifact.manifest.variants["int8"].file
    with pytest.raises(ShardError, match="between 2 and 8"):
        split(path, 1, tmp_path, tmp_path)
    with pytest.raises(ShardError, match="between 2 and 8"):
        split(path, 9, tmp_path, tmp_path)


def test_a_predictor_over_the_chain_scores_like_the_whole_model(built_model: Any) -> None:
    artifact = _artifact(built_model)
    features = np.random.default_rng(1).random((len(TEXTS), 16), dtype=np.float32)
    for execution in ("rows", "buckets"):
        options = PredictorOptions(variant="int8", execution=execution, bucket_size=2)
        whole = Predictor.from_options(artifact, options)
        info = artifact.manifest.variants["int8"]
        chain = LocalStages(artifact.path, info.stages["3"], artifact.manifest.output_names())
        sharded = Predictor.from_options(artifact, options, chain=chain)
        assert sharded.session is None and sharded.execution == execution
        expected, got = whole.predict(TEXTS, features), sharded.predict(TEXTS, features)
        for name in expected.outputs:
            np.testing.assert_array_equal(expected.outputs[name], got.outputs[name])
        assert expected.to_records() == got.to_records()


def test_asking_for_a_split_the_artifact_lacks_names_what_it_has(built_model: Any) -> None:
    artifact = _artifact(built_model)
    options = PredictorOptions.from_config(load_settings(model={"stages": 4}).model, variant="int8")
    with pytest.raises(ValueError, match=r"no 4-stage split \(has: 2, 3\).*--stages 4"):
        Predictor.from_options(artifact, options, sharded=True)
    assert Predictor.from_options(artifact, options, sharded=False).chain is None  # other models load whole
