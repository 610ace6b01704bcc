"""GPU-only: the VLM engine on CUDA in bf16 (skipped where there is no GPU, as in CI)."""
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("kind", ["deepseek-ocr-2", "got-ocr2"])
def test_engine_runs_batched_in_bf16_on_the_gpu(kind, tmp_path):
    from folioscan.workers.engines.registry import VlmOptions, build_engine
    from folioscan.workers.engines.vlm.random_init import save_random_model
    from tests.helpers import text_page_image

    path = save_random_model(kind, str(tmp_path))
    engine = build_engine(VlmOptions(kind=kind, model=path, budget="base", max_new_tokens=16, max_attempts=1, batch_size=4))
    assert engine.backend.device == "cuda" and engine.backend.dtype == torch.bfloat16
    results = engine.predict_batch([text_page_image("A page of text. " * 20, dpi=100)] * 4)
    assert len(results) == 4 and all(r.attempts[0].vision_tokens > 0 for r in results)
