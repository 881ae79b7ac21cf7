"""Smoke tests of the benchmark scripts: they run end to end in --quick mode and report what they claim.

The scripts run as real subprocesses (the way users run them), both at once to keep the wall time down;
numbers are never asserted, only the shape of the report and that the plot was written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO, checkout_env

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_common as bc  # noqa: E402
import bench_train  # noqa: E402


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """The scripts at once, each point in a forked child (the default on CPU), as users run them."""
    out = tmp_path_factory.mktemp("bench")
    cmds = {
        "train": [SCRIPTS / "bench_train.py", "--segments", "1,2", "--memory", "rmt,armt"],
        "infer": [SCRIPTS / "bench_infer.py", "--lengths", "64,256"],
        "eval": [SCRIPTS / "bench_eval.py"],
    }
    common = ["--quick", "--isolate", "fork", "--device", "cpu", "--threads", "1", "--out", out]
    procs = {}
    for name, cmd in cmds.items():
        err = open(out / f"{name}.stderr", "w")  # a file, not a pipe: no blocking on a full pipe
        procs[name] = subprocess.Popen(
            [sys.executable, *map(str, cmd + common)], stdout=subprocess.PIPE, stderr=err,
            text=True, env=checkout_env(),  # the scripts import this checkout's rmt
        )  # fmt: skip
        err.close()
    results = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=600)  # a hang guard; a busy box is slow
        stderr = (out / f"{name}.stderr").read_text()
        assert proc.returncode == 0, f"{name} failed:\n{stderr[-3000:]}"
        results[name] = json.loads(stdout)
    return out, results


def test_train_quick_reports_points_targets_and_plot(quick_runs):
    out, results = quick_runs
    res = results["train"]
    assert res["benchmark"] == "train_step" and res["device"] == "cpu"
    assert {"cpu", "logical_cpus", "torch_threads"} <= set(res["machine"])
    assert res["machine"]["torch_threads"] == 1
    points = res["points"]
    assert [(p["memory"], p["checkpointing"], p["segments"]) for p in points] == [
        (memory, ckpt, n) for memory in ("rmt", "armt") for ckpt in (False, True) for n in (1, 2)
    ]
    for p in points:
        assert p["status"] == "ok"
        assert p["tokens_per_step"] == p["segments"] * res["settings"]["segment_size"]
        assert p["tokens_per_s"] > 0 and p["peak_mb"] > 0 and p["step_s"] > 0
    # only 1 and 2 segments: the memory target cannot be judged, the speed one can
    assert res["targets"]["memory_32_over_2_checkpointed"]["met"] is None
    assert set(res["targets"]["throughput_slowdown_checkpointed"]["by_segments"]) == {"2"}
    armt = res["targets"]["armt_over_rmt_step_time"]  # every point measured for both memories
    assert len(armt["by_point"]) == 4 and armt["worst"] == max(armt["by_point"].values())
    saved = json.loads((out / "train_tiny_cpu_rmt-armt.json").read_text())
    assert saved["points"] == points
    assert (out / "train_tiny_cpu_rmt-armt.png").stat().st_size > 0
    table = bc.to_markdown(res).splitlines()
    assert len(table) == 2 + len(points) and "tokens/s (wall)" in table[0]


def test_infer_quick_reports_both_methods_and_plot(quick_runs):
    out, results = quick_runs
    res = results["infer"]
    assert res["benchmark"] == "read_and_answer"
    got = [(p["method"], p["length"]) for p in res["points"]]
    assert got == [("rmt", 64), ("rmt", 256), ("full", 64), ("full", 256)]
    for p in res["points"]:
        assert p["status"] == "ok"
        assert p["new_tokens"] == res["settings"]["new_tokens"]
        assert p["attn_implementation"] == "sdpa"
        assert p["seconds"] > 0 and p["peak_mb"] > 0
    targets = res["targets"]
    assert targets["rmt_linear_time_1M_over_128k"]["met"] is None  # not measured in --quick
    assert targets["rmt_flat_memory"]["from_length"] == 64
    assert set(targets["rmt_faster_than_full_from_16k"]["speedup_by_length"]) == {"64", "256"}
    assert (out / "infer_tiny_cpu.png").stat().st_size > 0
    assert len(bc.to_markdown(res).splitlines()) == 2 + len(res["points"])


def test_eval_quick_reports_samples_per_second_by_batch_and_length(quick_runs):
    out, results = quick_runs
    res = results["eval"]
    assert res["benchmark"] == "batched_scoring" and res["settings"]["jitter"] == 8
    assert [(p["batch"], p["length"]) for p in res["points"]] == [
        (b, n) for b in (2, 4) for n in (256, 512)
    ]
    for p in res["points"]:
        assert p["status"] == "ok" and p["compiled"] is None  # eager unless --compile
        assert p["new_tokens"] == res["settings"]["new_tokens"] == 2
        assert p["length"] - 8 < p["prompt_tokens"] / p["batch"] <= p["length"]  # jittered
        assert p["samples_per_s"] > 0 and p["samples_per_cpu_s"] > 0
    assert (out / "eval_tiny_cpu.png").stat().st_size > 0
    table = bc.to_markdown(res).splitlines()
    assert len(table) == 2 + len(res["points"]) and "samples/s (wall)" in table[0]


def test_child_protocol_reports_result_and_failures(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text(
        "import json, sys\n"
        f"print('noise'); print({bc.CHILD_PREFIX!r} + json.dumps(json.loads(sys.argv[2])))\n"
    )
    assert bc.run_child(ok, {"a": 1}, timeout=30) == {"a": 1}
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nsys.stderr.write('boom\\n'); sys.exit(3)\n")
    res = bc.run_child(bad, {}, timeout=30)
    assert res["status"] == "error" and "exit code 3" in res["reason"]
    assert res["stderr_tail"] == ["boom"]


def _fails(params):
    raise RuntimeError(f"bad point {params['n']}")


def _dies(params):
    import os

    os._exit(7)


def test_forked_points_report_results_and_failures():
    assert bc.run_forked(lambda p: {"status": "ok", "n": p["n"] + 1}, {"n": 1}, 60) == {
        "status": "ok",
        "n": 2,
    }
    res = bc.run_forked(_fails, {"n": 3}, 60)
    assert res == {"status": "error", "reason": "RuntimeError: bad point 3"}
    res = bc.run_forked(_dies, {}, 60)
    assert res["status"] == "error" and "exit code 7" in res["reason"]
    assert bc.resolve_isolation("auto", "cuda") == "exec"
    with pytest.raises(SystemExit, match="CUDA"):
        bc.resolve_isolation("fork", "cuda")


def test_infer_skips_full_attention_predicted_past_budget():
    import bench_infer

    done = [
        {
            "status": "ok",
            "length": 1024,
            "seconds": 1.0,
            "base_mb": 100.0,
            "peak_over_base_mb": 10.0,
        },
        {
            "status": "ok",
            "length": 2048,
            "seconds": 4.0,
            "base_mb": 100.0,
            "peak_over_base_mb": 20.0,
        },
    ]
    seconds, peak = bench_infer.predict_full(done, 8192)
    assert seconds == pytest.approx(64.0)  # quadratic in length
    assert peak == pytest.approx(100.0 + 20.0 * 4)  # memory grew linearly between the two points
    assert bench_infer.predict_full([], 8192) is None


def test_train_memory_extrapolation_follows_measured_growth():
    flat = [
        {"status": "ok", "segments": 2, "base_mb": 500.0, "peak_over_base_mb": 100.0},
        {"status": "ok", "segments": 4, "base_mb": 500.0, "peak_over_base_mb": 100.0},
    ]
    assert bc.extrapolate_peak(flat, "segments", 32, max_exponent=1.0) == pytest.approx(600.0)
    one = flat[:1]  # a single point: assume the worst allowed growth (linear here)
    assert bc.extrapolate_peak(one, "segments", 32, max_exponent=1.0) == pytest.approx(2100.0)


def test_parse_length_and_bad_values():
    assert bc.parse_length("16k") == 16384 and bc.parse_length("1M") == 2**20
    assert bc.parse_int_list("1,2, 4", "segments") == [1, 2, 4]
    with pytest.raises(ValueError, match="16x"):
        bc.parse_length("16x")
    with pytest.raises(SystemExit, match="--lengths"):
        bc.parse_int_list("0", "lengths")


def test_encoder_bench_reports_both_variants(tmp_path, one_thread):
    """`bench_encoder.py` times the classifier with and without memory at each segment count."""
    import bench_encoder

    res = bench_encoder.main(
        ["--segments", "1,2", "--segment-size", "8", "--mem-tokens", "2", "--batch-size", "1",
         "--steps", "1", "--warmup", "0", "--out", str(tmp_path)]
    )  # fmt: skip
    assert res["benchmark"] == "encoder_train_step" and res["backbone"] == "tiny_encoder"
    assert [(p["segments"], p["mem_tokens"]) for p in res["points"]] == [
        (1, 2), (1, 0), (2, 2), (2, 0)
    ]  # fmt: skip
    assert all(p["step_s"] > 0 for p in res["points"])
    assert "ratio_vs_no_memory" in res["points"][0]
    assert json.loads((tmp_path / "encoder_tiny_encoder_cpu.json").read_text()) == res


# ---------------------------------------------------------------- bench_train --baseline
def test_baseline_algorithm_computes_rmts_loss_and_gradients(tiny_rmt):
    """The baseline differs from rmt only in how it computes (all logits, activations kept): with
    answer-only labels on unpadded full segments, loss and gradients are rmt's."""
    ids = torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    losses, grads = [], []
    for baseline in (False, True):
        model = tiny_rmt("llama", mem=3, seg=8, segment_checkpointing=False).train()
        loss = (
            bench_train.baseline_loss(model, ids, labels)
            if baseline
            else model(ids, labels=labels).loss
        )
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_model_flops_count_non_embedding_parameters_and_head_rows(tiny_rmt):
    model = tiny_rmt("llama", mem=3, seg=8)
    vocab, hidden = model.backbone.get_input_embeddings().weight.shape
    embeddings = vocab * hidden * (1 if model.config.backbone_config.tie_word_embeddings else 2)
    non_embedding = sum(p.numel() for p in model.backbone.parameters()) - embeddings
    assert bench_train.model_flops(model, 10, 0) == 6 * non_embedding * 10
    assert bench_train.model_flops(model, 10, 4) - bench_train.model_flops(model, 10, 0) == (
        6 * hidden * vocab * 4
    )


def test_scheme_comparison_sets_each_scheme_against_off():
    def point(ckpt, scheme, segments, cpu_s, peak):
        return {"status": "ok", "memory": "rmt", "checkpointing": ckpt, "segments": segments,
                "scheme": scheme, "recomputed_segments": {"full": 7, "partial": 4}.get(scheme, 0),
                "tokens_per_s": 100.0, "cpu_s": cpu_s, "peak_over_base_mb": peak}  # fmt: skip

    points = [point(False, "none", 8, 1.0, 200.0), point(True, "full", 8, 1.5, 50.0),
              point("partial", "partial", 8, 1.2, 110.0), point("mlp", "mlp", 8, 1.3, 100.0),
              point("mlp", "mlp", 32, 1.0, 1.0)]  # fmt: skip
    result = bench_train.scheme_comparison(points)
    by_setting = {(r["setting"], r["segments"]): r for r in result["rows"]}
    assert by_setting[("full", 8)]["cpu_over_off"] == 1.5
    assert by_setting[("partial", 8)]["peak_over_off"] == 0.55
    assert by_setting[("mlp", 8)]["recomputed_segments"] == 0
    assert by_setting[("mlp", 32)]["cpu_over_off"] is None  # no "off" point at 32 segments
    assert "| rmt | 8 | partial | partial (4) |" in result["table"]


@pytest.mark.parametrize(
    "argv,message",
    [(["--schemes", "off,some"], "--schemes"), (["--partial-share", "1"], "--partial-share"),
     (["--schemes", "off", "--baseline", "--steps", "5"], "separate comparisons")],
)  # fmt: skip
def test_scheme_arguments_are_checked(argv, message):
    with pytest.raises(SystemExit, match=message):
        bench_train.parse_args(argv)


def test_baseline_comparison_ratios_and_mfu():
    def point(algorithm, ckpt, tok_s, recomputed=False):
        return {"status": "ok", "algorithm": algorithm, "checkpointing": ckpt, "segments": 8,
                "tokens_per_s": tok_s, "step_s": 1000 / tok_s, "peak_mb": 10.0,
                "model_flops_per_step": 10**6, "recomputed": recomputed,
                "cpu_tokens_per_s": tok_s / 2}  # fmt: skip

    points = [point("baseline", False, 100.0), point("rmt", "auto", 150.0, True),
              point("rmt", False, 200.0)]  # fmt: skip
    (row,) = bench_train.baseline_comparison(points, None)["rows"]
    assert row["default_over_baseline"] == 1.5 and row["off_over_baseline"] == 2.0
    assert row["mfu"] == [None, None, None] and row["default_recomputed"] is True
    assert row["cpu_time_ratios"] == [1.5, 2.0]
    with_peak = bench_train.baseline_comparison(points, 10**6)
    assert with_peak["rows"][0]["mfu"] == [0.1, 0.15, 0.2]  # flops/step / step_s / peak
    assert "6 x non-embedding" in with_peak["mfu_counted_as"] and "| 8 |" in with_peak["table"]


def test_baseline_needs_five_timed_steps():
    with pytest.raises(SystemExit, match="at least 5 timed steps"):
        bench_train.parse_args(["--baseline", "--steps", "3"])


def test_in_process_point_failure_is_reported_not_raised():
    def boom(params):
        raise RuntimeError("CUDA out of memory")

    point = bc.run_point(None, boom, {}, "none", None)
    assert point["status"] == "error" and "out of memory" in point["reason"]


def test_gpu_speed_summary_recovers_a_cut_row_from_its_log(tmp_path, capsys):
    import gpu_speed_summary

    def point(algorithm, ckpt, tok_s):
        return {"status": "ok", "algorithm": algorithm, "checkpointing": ckpt, "segments": 8,
                "tokens_per_s": tok_s, "step_s": 1.0, "peak_mb": 10.0, "memory": "rmt",
                "model_flops_per_step": 10**12, "recomputed": False,
                "cpu_tokens_per_s": tok_s}  # fmt: skip

    log = [
        f"[bench_train] x: {json.dumps(point(*p))}"
        for p in (("baseline", False, 100.0), ("rmt", "auto", 150.0), ("rmt", False, 160.0))
    ]
    (tmp_path / "r1_b8_s128.log").write_text("noise\n" + "\n".join(log) + "\n")  # no .json: cut
    (tmp_path / "machine.json").write_text(json.dumps({"gpu": "NVIDIA H200"}))
    (tmp_path / "r3_recipe.json").write_text(json.dumps({"steps": 7, "steps_per_s": 2.5}))
    scored = {"status": "ok", "batch": 8, "length": 4096, "samples_per_s": 12.5,
              "samples_per_cpu_s": 20.0, "tokens_per_s": 51200.0, "seconds": 0.64, "cpu_s": 0.4,
              "peak_mb": 900.0, "load_avg_before": [1.0], "load_avg_after": [1.5]}  # fmt: skip
    (tmp_path / "r5_eval.log").write_text(f"[bench_eval] batch=8 length=4096: {json.dumps(scored)}")
    gpu_speed_summary.main(tmp_path)
    text = capsys.readouterr().out
    assert "cut short" in text and "(1.50x)" in text and "(1.60x)" in text
    assert "| 7 |" in text and "did not finish" not in text.split("ARMT")[0]
    assert "0.10 / 0.10 / 0.10" in text  # MFU %: 1e12 FLOP in 1 s over the H200 peak 989e12
    assert "(r5_eval, cut short: points from its log)" in text
    assert "| 8 | 4,096 | 12.500 | 20.000 | 51,200 |" in text
    assert "no point finished" in text.split("(r6_eval_compiled")[1]  # no log at all


def test_recipe_bench_times_real_trainer_steps(tmp_path, one_thread):
    import bench_recipe

    result = bench_recipe.main(["--seconds", "600", "--out", str(tmp_path), "debug=fast",
                                "trainer.max_steps=3", "trainer.num_workers=0"])  # fmt: skip
    assert result["steps"] == 3 and result["stopped"] == "max_steps"
    assert result["steps_per_s"] > 0 and result["data_wait_share_mean"] is not None
    assert json.loads((tmp_path / "recipe_cpu.json").read_text())["steps"] == 3


def test_plot_signature_puts_each_run_on_its_own_row(tmp_path):
    from rmt.eval.results import EvalResult, write_csv

    def results(name, accuracies):
        rows = [
            EvalResult(model=name, mode="rmt", task="qa1", length=f"x{2**i}", length_tokens=256 * 2**i,
                       accuracy=a, exact_match=a, correct=0, n=200, seconds=1.0, checkpoint="c")
            for i, a in enumerate(accuracies)
        ]  # fmt: skip
        return write_csv(rows, tmp_path / f"{name}.csv")

    a, b = results("rmt", [1.0, 0.95, 0.425]), results("nomem", [0.2, 0.185, 0.185])
    out = tmp_path / "sig.png"
    done = subprocess.run(
        [sys.executable, SCRIPTS / "plot_signature.py", f"{a}=RMT", f"{b}=no memory", "--out", out],
        capture_output=True, text=True, env=checkout_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("| runs | RMT |") and "| 95.0 |" in line for line in lines), lines
    assert any(line.startswith("| runs | no memory |") for line in lines)
    assert out.stat().st_size > 1000
