"""Per-GPU training memory against published figures (capacity/training.py ``memory``).

Each test names its source and tolerance. Sizes in GB are 1e9 bytes unless they say GiB."""

from __future__ import annotations

import numpy as np
import pytest

from thresher.capacity.hardware import get_gpu
from thresher.capacity.models import Model, get_model
from thresher.capacity.stats import LengthStats
from thresher.capacity.training import (
    ACTIVATION_FRAGMENTATION,
    CUDA_CONTEXT,
    FRAGMENTATION,
    LORA_TARGETS,
    NF4_BITS,
    TrainInputs,
    activation_bytes_per_token_layer,
    korthikanti_activation_bytes,
    lora_params,
    memory,
)

GB = 1e9
H100 = get_gpu("h100-sxm")
L7 = get_model("llama-2-7b")
# LLaMA-1 (Touvron et al. 2023, Table 2): 7B d=4096 L=32 a=32; 65B d=8192 L=80 a=64; vocab 32,000
LLAMA_7B = Model.from_config("llama-7b", {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                          "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000})
LLAMA_65B = Model.from_config("llama-65b", {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 22016,
                                            "num_hidden_layers": 80, "num_attention_heads": 64, "vocab_size": 32000})


def _t(max_len: int = 512, **kw) -> TrainInputs:
    return TrainInputs(data=LengthStats(np.full(1000, float(max_len)), max_len), max_len=max_len, **kw)


def _gpt(h: int, a: int, layers: int) -> Model:
    """A GPT-3-shaped model (MHA, 4h GeLU MLP) as Korthikanti et al. 2022 Table 3 lists them."""
    return Model.from_config(f"gpt-{h}", {"model_type": "gpt2", "n_embd": h, "n_head": a, "n_layer": layers,
                                          "vocab_size": 51200, "n_positions": 2048})


# ---------------------------------------------------------------- 1. LoRA / QLoRA


def test_qlora_65b_fits_a_48gb_gpu_only_with_paged_optimizer():
    """QLoRA (Dettmers et al. 2023), abstract and §3/Figure 6: LLaMA-65B finetunes on a single
    48 GB GPU, paged optimizers making the largest models fit. Setup of their qlora.py for Guanaco:
    r=64 on all linear layers, adapters cast to bf16, paged_adamw_32bit, gradient checkpointing,
    batch 1, 384 + 128 = 512 tokens. Tolerance: GPU-resident memory below 48 GB; without paging the
    same job must not fit (Figure 6 caption: 'paged optimizers provide enough memory to make these
    models fit')."""
    gpu48 = 48 * GB
    q = memory(LLAMA_65B, H100, _t(method="qlora", lora_rank=64, adapter_dtype="bf16", optimizer="paged_adamw",
                                   recompute="full"))
    assert q.total - q.pageable < gpu48
    assert q.pageable == q.optimizer == pytest.approx(8 * lora_params(LLAMA_65B, 64, LORA_TARGETS))
    assert q.total > gpu48  # the optimizer states are what paging absorbs
    # PEFT's default fp32 adapters still fit with paging (4 + 4 bytes of adapter and gradient)
    f = memory(LLAMA_65B, H100, _t(method="qlora", lora_rank=64, optimizer="paged_adamw", recompute="full"))
    assert f.total - f.pageable < gpu48


def test_full_finetuning_65b_needs_over_780gb():
    """QLoRA abstract: finetuning LLaMA-65B in 16-bit needs '>780GB of GPU memory'. Mixed-precision
    AdamW (16 bytes per parameter, ZeRO §3) on one device must exceed it (tolerance: a lower bound)."""
    full = memory(LLAMA_65B, H100, _t(method="full", recompute="full"))
    assert full.weights + full.gradients + full.optimizer == pytest.approx(16 * LLAMA_65B.params())
    assert full.total > 780 * GB


def test_qlora_7b_small_batch_5_to_6_gb():
    """QLoRA Figure 6 / §2 (LLaMA-7B, batch 1, sequence 512, gradient checkpointing): about 5-6 GB in
    all (as the issue quotes the paper; the figure's bars are not re-read here). Here PEFT's fp32 adapters, r=8 on all linear layers (20M
    parameters, 0.3%), AdamW. Tolerance: the 5-6 GB band."""
    q = memory(LLAMA_7B, H100, _t(method="qlora", lora_rank=8, recompute="full"))
    assert 5 * GB <= q.total <= 6 * GB
    lin = LLAMA_7B.linear_params()
    base = lin * NF4_BITS / 8 + (LLAMA_7B.params() - lin) * 2
    assert base == pytest.approx(3.9 * GB, rel=0.05)  # arithmetic: 6.5B linear x 4.127 bits + 0.26B x 2 bytes
    # NF4 + double-quantised constants: 0.5 byte + 0.127 bits per parameter (QLoRA §3)
    per_param = NF4_BITS / 8
    assert per_param == pytest.approx(0.5 + 0.127 / 8)


def test_peft_adapter_and_optimizer_bytes():
    """PEFT keeps adapters (and so their gradients) in fp32 and AdamW's m and v in fp32: 4 + 4 + 8
    bytes per trainable parameter; bitsandbytes' 8-bit Adam keeps m and v in one byte each
    (Dettmers et al., '8-bit Optimizers via Block-wise Quantization', ICLR 2022). Exact."""
    n = lora_params(L7, 16, LORA_TARGETS)
    lo = memory(L7, H100, _t(method="lora"))
    assert lo.weights == pytest.approx(2 * L7.params() + 4 * n)
    assert lo.gradients == pytest.approx(4 * n) and lo.optimizer == pytest.approx(8 * n)
    assert memory(L7, H100, _t(method="lora", optimizer="adamw8bit")).optimizer == pytest.approx(2 * n)
    assert memory(L7, H100, _t(method="lora", optimizer="paged_adamw8bit")).pageable == pytest.approx(2 * n)
    bf = memory(L7, H100, _t(method="lora", adapter_dtype="bf16"))
    assert bf.gradients == pytest.approx(2 * n)
    # QLoRA dequantises NF4 weights to bf16 one layer at a time: that layer's linear weights in bf16
    q = memory(L7, H100, _t(method="qlora"))
    assert q.buffers == pytest.approx(2 * L7.linear_params() / L7.layers)
    with pytest.raises(ValueError):
        memory(L7, H100, _t(optimizer="sgd"))


def test_lora_7b_bf16_lit_gpt():
    """S. Raschka, 'Practical Tips for Finetuning LLMs Using LoRA' (Ahead of AI, Nov 2023): Llama-2-7B,
    lit-gpt LoRA r=8 on query and value, bf16 weights, micro-batch 1, no checkpointing, on Alpaca:
    21.33 GB peak ('Memory used'). The figure is quoted as recalled and the run's maximum sequence
    length is not stated (the longest Alpaca examples are ~1.0-1.3k tokens), so the test brackets
    it: at 1,024 tokens the plan must not exceed it by 5%, at 1,304 it must reach within 5% of it."""
    kw = dict(method="lora", lora_rank=8, lora_targets=("q_proj", "v_proj"), adapter_dtype="bf16")
    assert memory(L7, H100, _t(1024, **kw)).total <= 21.33 * GB * 1.05
    assert memory(L7, H100, _t(1304, **kw)).total >= 21.33 * GB * 0.95


# ---------------------------------------------------------------- 2. ZeRO / FSDP


def test_zero_paper_figure_1():
    """ZeRO (Rajbhandari et al. 2020), Figure 1: Ψ = 7.5B parameters, K = 12, N_d = 64 GPUs: model
    states per GPU 120 GB (baseline), 31.4 GB (P_os), 16.6 GB (P_os+g), 1.9 GB (P_os+g+p).
    Scaled to the model's parameter count; tolerance 0.05 GB (the figure rounds to 0.1 GB)."""
    scale = 7.5e9 / L7.params()
    got = []
    for z in range(4):
        mm = memory(L7, H100, _t(gpus=64, zero=z))
        got.append((mm.weights + mm.gradients + mm.optimizer) * scale / GB)
    assert got == pytest.approx([120, 31.4, 16.6, 1.9], abs=0.05)


def test_fsdp_gather_prefetch_and_reduce_scatter_buffers():
    """PyTorch FSDP (Zhao et al., VLDB 2023, §3.3-4; ``limit_all_gathers`` docs): at most two FSDP
    units' parameters are unsharded at once, the one computing and the one prefetched; a unit's
    gradients are whole until reduce-scattered. Per decoder layer as the unit: 2 x layer params x
    2 bytes gathered, plus 1 x layer params x 2 bytes of gradients (exact), tensor-parallel
    sharded, none without data parallelism."""
    lp = L7.layer_params()
    z3 = memory(L7, H100, _t(gpus=8, zero=3))
    assert z3.buffers == pytest.approx(2 * 2 * lp + 2 * lp)
    assert memory(L7, H100, _t(gpus=8, zero=2)).buffers == pytest.approx(2 * lp)
    assert memory(L7, H100, _t(gpus=8, zero=1)).buffers == 0
    assert memory(L7, H100, _t(gpus=1, zero=3)).buffers == 0
    assert memory(L7, H100, _t(gpus=8, zero=3, tp=2)).buffers == pytest.approx(3 * lp)
    # FSDP + QLoRA gathers the NF4 storage of the base, plus the dequantised layer
    q = memory(L7, H100, _t(gpus=8, zero=3, method="qlora"))
    assert q.buffers == pytest.approx(2 * lp * NF4_BITS / 8 + 2 * L7.linear_params() / L7.layers)


# ---------------------------------------------------------------- 3. activations, TP and SP

# Korthikanti et al. 2022, Table 3: (heads a, hidden h, layers, tensor-parallel t); s = 2048
KORTHIKANTI = {"gpt3-175b": (96, 12288, 96, 8), "mt-nlg-530b": (128, 20480, 105, 8), "1t": (160, 25600, 128, 8)}


@pytest.mark.parametrize("name", KORTHIKANTI)
def test_korthikanti_table_2_on_table_3_models(name):
    """Korthikanti et al. 2022, 'Reducing Activation Recomputation in Large Transformer Models':
    Table 2's per-layer formulas on Table 3's models (s = 2048, b = 1, t = 8). §5: selective
    recomputation cuts activation memory by 70% for GPT-3 (5as/h = 80) and 65% for MT-NLG
    (5as/h = 64); the abstract: sequence parallelism with selective recomputation cuts activation
    memory ~5x against tensor parallelism alone. Tolerance: 1 percentage point, 10% on the 5x.
    The planner's per-tensor count for the same shapes must equal the formula less the two dropout
    masks (sbh, /t with sequence parallelism) modern models do not keep: exact."""
    a, h, layers, t = KORTHIKANTI[name]
    s = 2048
    full = korthikanti_activation_bytes(s, 1, h, a)
    sel = korthikanti_activation_bytes(s, 1, h, a, recompute="selective")
    cut = {"gpt3-175b": 0.70, "mt-nlg-530b": 0.65, "1t": 0.65}[name]
    assert 1 - sel / full == pytest.approx(cut, abs=0.01)
    tp_only = korthikanti_activation_bytes(s, 1, h, a, t=t)
    sp_sel = korthikanti_activation_bytes(s, 1, h, a, t=t, sequence_parallel=True, recompute="selective")
    assert sp_sel == pytest.approx(s * h * 34 / t)
    assert tp_only / sp_sel == pytest.approx(5, rel=0.10)
    m = _gpt(h, a, layers)
    for tt, sp in ((1, False), (t, False), (t, True)):
        ours = s * activation_bytes_per_token_layer(m, "none", False, s, tt, sp)
        paper = korthikanti_activation_bytes(s, 1, h, a, t=tt, sequence_parallel=sp)
        assert ours == pytest.approx(paper - 2 * s * h / (tt if sp else 1))
    assert s * activation_bytes_per_token_layer(m, "selective", False, s, t, True) == pytest.approx(sp_sel - 2 * s * h / t)
    assert s * activation_bytes_per_token_layer(m, "full", False, s, t, True) == pytest.approx(
        korthikanti_activation_bytes(s, 1, h, a, t=t, sequence_parallel=True, recompute="full"))


def test_memory_uses_sequence_parallel_switch():
    """Tensor parallelism without sequence parallelism keeps the layer-norm region whole per rank."""
    sp = memory(L7, H100, _t(2048, gpus=4, tp=4))
    no_sp = memory(L7, H100, _t(2048, gpus=4, tp=4, sequence_parallel=False))
    extra = 2048 * L7.layers * 8 * L7.hidden * (1 - 1 / 4)
    assert no_sp.activations - sp.activations == pytest.approx(extra)


# ---------------------------------------------------------------- 4. allocator reserve


def test_reserve_is_context_plus_fragmentation():
    """An assumption, not a published figure: PyTorch's caching allocator reserves more than it
    allocates (torch.cuda.memory_reserved / memory_allocated measures it); the planner keeps the
    CUDA context (0.5 GiB), 5% of static allocations and 10% of activations and logits. Exact."""
    mm = memory(L7, H100, _t(2048, gpus=8, zero=3))
    static = mm.weights + mm.gradients + mm.optimizer + mm.buffers
    assert mm.reserve == pytest.approx(CUDA_CONTEXT + FRAGMENTATION * static
                                       + ACTIVATION_FRAGMENTATION * (mm.activations + mm.logits))
    assert mm.total == pytest.approx(static + mm.activations + mm.logits + mm.reserve)
    d = mm.gib()
    assert {"buffers", "pageable", "total", "fits"} <= set(d)
