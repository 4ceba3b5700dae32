"""quantize_model on every GEMM of common model families (issue 15, item 7).

Hugging Face models are built from tiny configs with random weights (no download: offline mode
is set before transformers is imported, and nothing calls ``from_pretrained``).  Each quantized
model is held against a reference built by hand: every GEMM module of a copy of the model is
replaced by a plain autograd function that quantizes its six inputs with fpformat (formats
built here, blocks along each GEMM's reduction axis, scale amax/max_elem) and multiplies with
torch.  Outputs and all gradients must agree bit for bit (rtol=0, atol=0): both sides hand torch
the same operand tensors (same values, same memory layout) in the same order.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"          # before transformers: a download would fail, not run
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from explorer.train import qlinear  # noqa: E402
from explorer.train.model import Decoder, ModelConfig  # noqa: E402
from explorer.train.qlinear import (  # noqa: E402
    TARGETS,
    OperandSpec,
    QuantConfig,
    QuantGemm,
    QuantLinear,
    dequantize_model,
    gemm_types,
    quantize_model,
    register_gemm,
    set_quant_step,
)
from fpformat import BlockFormat, get_format  # noqa: E402
from fpformat.torch import quantize_values  # noqa: E402

VOCAB = 64


def llama():
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        attn_implementation="eager"))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        attn_implementation="eager"))


def neox():
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager"))


FAMILIES = {"llama": llama, "gpt2": gpt2, "gpt_neox": neox}
# Dropout is off (GPT-2's defaults are 0.1; the others' are 0): both sides must draw nothing.
# GEMM modules of each 2-layer model: Llama q,k,v,o,gate,up,down per layer; GPT-2 c_attn,
# attn.c_proj, c_fc, mlp.c_proj (Conv1D) per layer; GPT-NeoX query_key_value, dense,
# dense_h_to_4h, dense_4h_to_h per layer.  Plus each one's head, an nn.Linear (GPT-2's tied to
# the token embedding; GPT-NeoX's named embed_out before transformers 5, so found as the model's
# get_output_embeddings()), which stays unquantized unless include_head.
BLOCK_GEMMS = {"llama": 14, "gpt2": 8, "gpt_neox": 8}


def build(family: str) -> nn.Module:
    torch.manual_seed(0)
    return FAMILIES[family]().float()


def head_name(model: nn.Module) -> str:
    """The classifier's name: ``lm_head``, or ``embed_out`` for GPT-NeoX in transformers 4."""
    head = model.get_output_embeddings()
    return next(n for n, m in model.named_modules() if m is head)


def gemm_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every GEMM module of an unquantized transformers model, found independently of
    explorer: instances of nn.Linear or transformers' Conv1D."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}


# --------------------------------------------------------------------------- the hand reference
def ref_quantize(t: torch.Tensor, spec: OperandSpec | None, axis: int) -> torch.Tensor:
    """``t`` (2-D) rounded by fpformat, blocks along ``axis``: the element format, with (block
    given) a float32 scale amax/max_elem per block, rne, saturating.

    Through fpformat.torch.quantize_values, blocks along axis 0 by quantizing the transposed
    tensor along its last axis, the result laid out C-contiguous like ``t`` (the layer quantizes
    such blocks in place): torch's CPU matmul picks its kernel (and so how it rounds, e.g. with
    or without FMA) by strides; equal layouts make rtol=0, atol=0 fair."""
    if spec is None:
        return t
    el = get_format(spec.fmt)
    fmt = el if spec.block is None else BlockFormat(element=el, block_size=spec.block, axis=-1,
                                                    scale_format=None, scale_rule="amax")
    if axis == 1 or spec.block is None:          # no block: each element alone, no axis
        return quantize_values(t.detach().contiguous(), fmt, rounding="rne", saturate=True)
    q = quantize_values(t.t().detach().contiguous(), fmt, rounding="rne", saturate=True)
    return q.t().contiguous()


class RefGemmFn(torch.autograd.Function):
    """y = Q(x) Q(W)^T + b; dx = Q(dy) Q(W); dW = Q(dy)^T Q(x); db = sum dy.  W is (out, in);
    each Q has its blocks along the reduction axis of the GEMM it feeds."""

    @staticmethod
    def forward(ctx, x2, w, b, specs):
        ctx.save_for_backward(x2, w)
        ctx.specs, ctx.has_bias = specs, b is not None
        # nn.Linear's GEMM (the bias added inside it, as torch's addmm adds it)
        return torch.nn.functional.linear(ref_quantize(x2, specs["fwd_x"], 1),
                                          ref_quantize(w, specs["fwd_w"], 1), b)

    @staticmethod
    def backward(ctx, gy):
        x2, w = ctx.saved_tensors
        s = ctx.specs
        gy = gy.contiguous()
        gx = ref_quantize(gy, s["dgrad_dy"], 1) @ ref_quantize(w, s["dgrad_w"], 0)
        gw = ref_quantize(gy, s["wgrad_dy"], 0).t() @ ref_quantize(x2, s["wgrad_x"], 0)
        return gx, gw, gy.sum(0) if ctx.has_bias else None, None


class RefGemm(nn.Module):
    """A GEMM module's reference: its own parameters, the weight read (out, in)."""

    def __init__(self, weight, bias, transposed: bool, specs: dict):
        super().__init__()
        self.weight, self.bias, self.transposed, self.specs = weight, bias, transposed, specs

    def forward(self, x):
        w = self.weight.t() if self.transposed else self.weight
        y = RefGemmFn.apply(x.reshape(-1, x.shape[-1]), w, self.bias, self.specs)
        return y.reshape(*x.shape[:-1], w.shape[0])


def reference_model(model: nn.Module, qcfg: QuantConfig, head: str | None) -> nn.Module:
    specs = {t: qcfg.spec(t) for t in TARGETS}
    for name, m in list(gemm_modules(model).items()):
        if name == head and not qcfg.include_head:
            continue
        parent = model.get_submodule(name.rpartition(".")[0])
        setattr(parent, name.rpartition(".")[2],
                RefGemm(m.weight, m.bias, isinstance(m, Conv1D), specs))
    return model


# Every target its own spec: a target fed the wrong operand, axis or spec shows.
DISTINCT = QuantConfig(fmt=None, overrides=(
    ("fwd_x", OperandSpec("e4m3", 16)), ("fwd_w", OperandSpec("e2m3", "channel")),
    ("dgrad_dy", OperandSpec("e5m2", "tensor")), ("dgrad_w", OperandSpec("e3m2", 8)),
    ("wgrad_dy", OperandSpec("e5m2", 16)), ("wgrad_x", OperandSpec("e4m3", None))))
CONFIGS = {
    "distinct": DISTINCT,
    "default_targets": QuantConfig(fmt="e2m3", block=16),      # fwd_w, dgrad_w, wgrad_x
    "all_with_head": QuantConfig(fmt="e3m2", block=8, targets="all", include_head=True),
}


def run(model: nn.Module, tokens: torch.Tensor, probe: torch.Tensor):
    """Logits and the gradients of the input embeddings and every parameter of one
    forward/backward, the loss a fixed random projection of the logits."""
    model.zero_grad(set_to_none=True)
    emb = model.get_input_embeddings()(tokens).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits
    (logits * probe).sum().backward()
    return logits.detach(), emb.grad, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_quantized_forward_and_backward_equal_the_hand_reference(family, config):
    qcfg = CONFIGS[config]
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, 12))
    probe = torch.randn(2, 12, VOCAB)
    plain = build(family)
    ref = reference_model(copy.deepcopy(plain), qcfg, head=head_name(plain))
    model = copy.deepcopy(plain)
    report = quantize_model(model, qcfg)
    n = BLOCK_GEMMS[family] + qcfg.include_head
    assert report.count == n == len(report.names)

    y, gx, gp = run(model, tokens, probe)
    y_ref, gx_ref, gp_ref = run(ref, tokens, probe)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)
    assert gp.keys() == gp_ref.keys()
    for name in gp:
        if gp[name] is None:      # the token embedding: the inputs enter as embeddings
            assert gp_ref[name] is None and name.endswith(("wte.weight", "embed_tokens.weight",
                                                           "embed_in.weight")), name
            continue
        torch.testing.assert_close(gp[name], gp_ref[name], rtol=0, atol=0, msg=name)
    # ... and quantization really acted: the unquantized model computes something else.
    y_plain, gx_plain, _ = run(plain, tokens, probe)
    assert not torch.equal(y, y_plain) and not torch.equal(gx, gx_plain)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_gemm_module_is_swapped_and_reported(family):
    model = build(family)
    gemms = gemm_modules(model)
    head = head_name(model)
    assert len(gemms) == BLOCK_GEMMS[family] + 1                     # + the head
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    weights = {n: m.weight for n, m in gemms.items()}

    report = quantize_model(model, QuantConfig(fmt="e4m3", block=32))
    assert report.count == BLOCK_GEMMS[family]
    assert set(report.names) == set(gemms) - {head}
    assert report.skipped == ((head, "classifier head (include_head=False)"),)
    assert str(report).startswith(f"{BLOCK_GEMMS[family]} of {BLOCK_GEMMS[family] + 1} GEMM")
    for name in report.names:
        m = model.get_submodule(name)
        if isinstance(gemms[name], Conv1D):
            assert type(m) is QuantGemm and m.gemm.layout == "in_out"
        else:
            assert type(m) is QuantLinear
        assert m.weight is weights[name]                            # shared, not copied
    assert type(model.get_submodule(head)) is nn.Linear
    assert [model.get_submodule(n).layer_id for n in report.names] == list(range(report.count))
    # Checkpoints are unchanged: same keys, same tensors, loadable both ways.
    sd = model.state_dict()
    assert sd.keys() == keys.keys() and all(torch.equal(sd[k], keys[k]) for k in keys)
    model.load_state_dict(keys)

    report = quantize_model(model, QuantConfig(fmt="e4m3", block=32, include_head=True))
    assert report.count == BLOCK_GEMMS[family] + 1 and report.skipped == ()
    assert isinstance(model.get_submodule(head), QuantLinear)
    if family == "gpt2":                                            # tied weights stay tied
        assert model.lm_head.weight is model.transformer.wte.weight

    dequantize_model(model)
    for name, m in gemm_modules(model).items():
        assert m is gemms[name] and m.weight is weights[name]      # the very modules are back
    assert not any(isinstance(m, qlinear._QuantGemmMixin) for m in model.modules())


SPECS = st.one_of(st.none(), st.builds(
    OperandSpec, st.sampled_from(["e4m3", "e2m1", "e5m2", "e3m2"]),
    st.sampled_from([None, 1, 3, 8, "channel", "tensor"])))


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 19), n_out=st.integers(1, 13), tokens=st.integers(1, 11),
       conv=st.booleans(), bias=st.booleans(), specs=st.tuples(*[SPECS] * len(TARGETS)),
       seed=st.integers(0, 2**16))
def test_one_gemm_module_equals_the_hand_reference(n_in, n_out, tokens, conv, bias, specs, seed):
    """Any shape (partial blocks included), either weight layout, any mix of operand specs (none
    at all is the plain module's own computation, tested apart)."""
    assume(any(s is not None for s in specs))
    torch.manual_seed(seed)
    if conv:
        assume(bias)                                        # Conv1D always has a bias
        mod = Conv1D(n_out, n_in)
        nn.init.normal_(mod.bias)
    else:
        mod = nn.Linear(n_in, n_out, bias=bias)
    qcfg = QuantConfig(overrides=tuple((t, s) for t, s in zip(TARGETS, specs, strict=True)
                                       if s is not None))
    net = nn.Sequential(mod)
    ref = RefGemm(mod.weight, mod.bias, conv, {t: qcfg.spec(t) for t in TARGETS})
    quantize_model(net, qcfg)
    x = (torch.randn(2, tokens, n_in) * 3).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    probe = torch.randn(2, tokens, n_out)
    y, y_ref = net(x), ref(xr)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    (y * probe).sum().backward()
    grads = [p.grad.clone() for p in mod.parameters()]
    mod.zero_grad(set_to_none=True)
    (y_ref * probe).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=0)
    for g, p in zip(grads, mod.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(256, 512, 64), (128, 700, 48)])
def test_training_forward_is_the_evaluation_forward(shape):
    """With autograd and without, a quantized layer computes nn.Linear's GEMM of its quantized
    inputs, bit for bit.  With a bias and 512 or more inputs, torch's matmul followed by a
    separate bias addition rounds differently from nn.Linear's (addmm adds the bias inside
    the GEMM), so a training forward of that form would evaluate to other numbers."""
    tokens, n_in, n_out = shape
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(n_in, n_out))
    quantize_model(net, QuantConfig(fmt="e4m3", block=32))
    x = torch.randn(tokens, n_in, requires_grad=True)
    y = net(x)
    with torch.no_grad():
        assert torch.equal(net(x), y)
    q = net[0]
    qw = ref_quantize(q.weight, OperandSpec("e4m3", 32), 1)
    assert torch.equal(y, torch.nn.functional.linear(x, qw, q.bias))


def test_gpt2_conv1d_unquantized_is_the_modules_own_computation():
    """A QuantGemm with no GEMM input quantized computes what Conv1D itself computes."""
    torch.manual_seed(0)
    conv = Conv1D(24, 40)
    nn.init.normal_(conv.bias)
    x = torch.randn(3, 5, 40)
    q = QuantGemm(conv, qlinear._gemm_type_of(conv), QuantConfig())
    assert (q.in_features, q.out_features) == (40, 24) and not q.quantizes
    torch.testing.assert_close(q(x), conv(x), rtol=0, atol=0)


def test_dequantize_puts_back_the_parameters_the_replacement_holds():
    conv = Conv1D(4, 6)
    net = nn.Sequential(conv)
    quantize_model(net, QuantConfig(fmt="e4m3"))
    new = nn.Parameter(torch.randn(6, 4))
    net[0].weight = new                                  # e.g. loaded or re-tied after swapping
    dequantize_model(net)
    assert net[0] is conv and conv.weight is new


def test_attention_only_config_counts_no_quantized_gemm():
    """An attention-only config on our Decoder quantizes q, k, v, not the GEMMs: count 0, so no
    record can call its GEMMs quantized."""
    model = Decoder(ModelConfig(layers=2, d_model=32))
    r = quantize_model(model, QuantConfig(attention=OperandSpec("e4m3", None)))
    assert r.count == 0 and not r.quantizes and len(r.names) == 14 and r.attention == 2


def test_decoder_layer_ids_follow_the_established_order():
    """layer_id seeds stochastic rounding: on our Decoder the numbering is the one runs were
    recorded with (each parent's Linear children, parents in named_modules order)."""
    model = Decoder(ModelConfig(layers=2, d_model=32))
    expected = [f"{p}.{n}" if p else n for p, mod in model.named_modules()
                for n, c in mod.named_children() if isinstance(c, nn.Linear) and n != "head"]
    r = quantize_model(model, QuantConfig(fmt="e4m3", block=32, rounding="sr"))
    assert list(r.names) == expected
    assert [model.get_submodule(n).layer_id for n in expected] == list(range(len(expected)))


# ------------------------------------------------------------------------ the registration hook
class Proj(nn.Module):
    """A user GEMM module: y = x K + c with K stored (in, out) under its own names."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.offset = nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return x @ self.kernel + self.offset


class ProjNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Proj(24, 16)
        self.b = Proj(16, 8)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(qlinear, "_GEMM_TYPES", dict(qlinear._GEMM_TYPES))


def test_registered_custom_module_is_quantized_exactly(registry):
    torch.manual_seed(2)
    net = ProjNet()
    with pytest.raises(ValueError, match=r"ProjNet has no GEMM module.*torch\.nn\.modules\."
                                         r"linear\.Linear.*Conv1D.*register_gemm"):
        quantize_model(net, DISTINCT)
    g = register_gemm(Proj, layout="in_out", weight="kernel", bias="offset")
    assert g in gemm_types() and g.module_type == f"{__name__}.Proj"
    ref = copy.deepcopy(net)
    specs = {t: DISTINCT.spec(t) for t in TARGETS}
    ref.a = RefGemm(ref.a.kernel, ref.a.offset, True, specs)
    ref.b = RefGemm(ref.b.kernel, ref.b.offset, True, specs)
    kernel, keys = net.a.kernel, net.state_dict().keys()

    r = quantize_model(net, DISTINCT)
    assert r.names == ("a", "b") and r.count == 2
    assert type(net.a) is QuantGemm and net.a.kernel is kernel and net.state_dict().keys() == keys
    x = torch.randn(6, 24, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    probe = torch.randn(6, 8)
    (net(x) * probe).sum().backward()
    (ref(xr) * probe).sum().backward()
    torch.testing.assert_close(net(x), ref(xr), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=0)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    dequantize_model(net)
    assert type(net.a) is Proj and net.a.kernel is kernel


def test_register_by_path_without_importing_and_custom_build(registry):
    """A type named by its path; a module with extra state needs its own build, which is called
    with (module, qcfg, layer_id) and whose result dequantize_model undoes."""

    class Scaled(Proj):
        def __init__(self, n_in, n_out):
            super().__init__(n_in, n_out)
            self.register_buffer("gain", torch.tensor(2.0))

        def forward(self, x):
            return super().forward(x) * self.gain

    class QuantScaled(QuantGemm):
        def forward(self, x):
            return super().forward(x) * self.gain

    register_gemm(f"{__name__}.Proj", layout="in_out", weight="kernel", bias="offset")
    net = nn.Sequential(Scaled(8, 8), nn.ReLU(), Proj(8, 4))
    with pytest.raises(ValueError, match="holds gain besides kernel and offset.*build="):
        quantize_model(net, QuantConfig(fmt="e4m3"))
    calls = []

    def build(module, qcfg, layer_id):
        calls.append((module, qcfg, layer_id))
        q = QuantScaled(module, qlinear._GEMM_TYPES[f"{__name__}.Proj"], qcfg, layer_id)
        q.register_buffer("gain", module.gain)
        return q

    register_gemm(Scaled, layout="in_out", weight="kernel", bias="offset", build=build)
    orig = net[0]
    qcfg = QuantConfig(fmt="e4m3")
    r = quantize_model(net, qcfg)
    assert r.names == ("0", "2") and calls == [(orig, qcfg, 0)]
    assert type(net[0]) is QuantScaled and type(net[2]) is QuantGemm
    x = torch.randn(3, 8)
    torch.testing.assert_close(net[0](x), net[0].gain * QuantGemm.forward(net[0], x))
    set_quant_step(net, 7)
    assert net[0].step == 7 and net[2].step == 7
    quantize_model(net, QuantConfig(fmt="e5m2"))        # re-configures in place
    assert len(calls) == 1 and net[0].qcfg.fmt == "e5m2"
    dequantize_model(net)
    assert net[0] is orig and type(net[2]) is Proj


def test_register_gemm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        register_gemm(Proj, layout="row_major")
    with pytest.raises(ValueError, match="module_type"):
        register_gemm("Proj")
    with pytest.raises(ValueError, match="module_type"):
        register_gemm(int)
    with pytest.raises(ValueError, match="bias"):
        register_gemm(Proj, weight="kernel", bias="kernel")
    with pytest.raises(ValueError, match="build"):
        register_gemm(Proj, build="QuantGemm")


# --------------------------------------------------------------------------- models with none
def test_model_without_gemm_raises_naming_it_and_the_registered_types():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(ValueError) as e:
        quantize_model(net, QuantConfig(fmt="e4m3"))
    msg = str(e.value)
    assert msg.startswith("Sequential has no GEMM module to quantize")
    for g in gemm_types():
        assert g.module_type in msg


def test_model_whose_only_gemm_is_the_head_raises():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.lm_head = nn.Linear(8, 10)

    m = Probe()
    with pytest.raises(ValueError, match=r"Probe has no GEMM module.*lm_head.*include_head=True"):
        quantize_model(m, QuantConfig(fmt="e4m3"))
    assert quantize_model(m, QuantConfig(fmt="e4m3", include_head=True)).count == 1


def test_a_gemm_module_itself_and_attention_without_hook_raise():
    with pytest.raises(ValueError, match=r"model \(Linear\) is itself a GEMM module"):
        quantize_model(nn.Linear(4, 4), QuantConfig(fmt="e4m3"))
    with pytest.raises(ValueError, match=r"attention: LlamaForCausalLM has no attention module"):
        quantize_model(build("llama"), QuantConfig(fmt="e4m3", attention=OperandSpec("e4m3")))


def test_multihead_attention_out_proj_is_reported_not_counted():
    """nn.MultiheadAttention multiplies by out_proj.weight itself (its forward never runs):
    swapping it would count a GEMM that stays unquantized."""
    layer = nn.Sequential(nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32))
    r = quantize_model(layer, QuantConfig(fmt="e4m3"))
    assert r.names == ("0.linear1", "0.linear2")
    assert r.skipped == (("0.self_attn.out_proj",
                          "nn.MultiheadAttention uses its weight directly"),)
    assert not isinstance(layer[0].self_attn.out_proj, QuantLinear)


def test_a_module_reachable_twice_is_one_gemm():
    shared = nn.Linear(8, 8)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    r = quantize_model(net, QuantConfig(fmt="e4m3"))
    assert r.names == ("0",) and net[0] is net[2] and isinstance(net[0], QuantLinear)
    dequantize_model(net)
    assert net[0] is net[2] and type(net[0]) is nn.Linear


def test_a_module_held_under_two_names_by_one_parent_is_restored_under_both():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = self.a

        def forward(self, x):
            return self.b(self.a(x))

    m = Tied()
    weight = m.a.weight
    quantize_model(m, QuantConfig(fmt="e4m3"))
    assert m.a is m.b and isinstance(m.a, QuantLinear)
    dequantize_model(m)
    assert m.a is m.b and type(m.a) is nn.Linear and m.a.weight is weight


def test_hub_is_offline_so_nothing_can_download():
    import huggingface_hub.constants as hc
    assert hc.HF_HUB_OFFLINE


def test_explorer_does_not_import_transformers():
    """transformers is a test dependency: Conv1D is recognised by its class path."""
    code = ("import sys, torch, explorer.train.qlinear as q, explorer.train.trainer; "
            "assert 'transformers.pytorch_utils.Conv1D' in [g.module_type for g in "
            "q.gemm_types()]; "
            "print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
