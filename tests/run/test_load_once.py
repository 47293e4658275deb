"""Load once per run: the model's config, its processor and the data are read one time each, the fit check's
estimate included (it plans from what the run already holds)."""

from __future__ import annotations

import pytest

import trainer_core.data.prepare as prepare
import trainer_core.model.loading as loading


@pytest.mark.slow
def test_a_run_with_a_fit_check_reads_config_processor_and_data_once(demo_preset, monkeypatch):
    import trainer_core.model.info as info
    from trainer_core.run.engine import run_training

    reads = {"config": 0, "processor": 0, "data": 0}

    def counting(kind, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            reads[kind] += 1
            return fn(*args, **kwargs)
        return wrapper

    # vlmtune's own reads (transformers' AutoProcessor reads config.json again inside, which is its business)
    monkeypatch.setattr(loading, "load_config", counting("config", loading.load_config))
    monkeypatch.setattr(info, "resolve_config", counting("config", info.resolve_config))
    monkeypatch.setattr(loading, "load_processing_class", counting("processor", loading.load_processing_class))
    monkeypatch.setattr(prepare, "read_rows", counting("data", prepare.read_rows))
    import trainer_core.data.stats as stats

    monkeypatch.setattr(stats, "read_rows", counting("data", stats.read_rows))
    preset = demo_preset("demo-sft", "training.max_steps=2", "samples.every_steps=0", "samples.prompts=[]")
    result = run_training(preset, fit_check=True)
    assert result.status == "completed", result.error
    summary = (result.run_dir / "summary.json").read_text()
    assert '"memory_estimate"' in summary and '"fit_check"' in summary
    assert reads == {"config": 1, "processor": 1, "data": 1}, reads
