"""`noisewarp demo` and `noisewarp compare` on tiny sizes."""
import json

import numpy as np

from noisewarp.cli import main
from noisewarp.demo import Scene

from ..core2d.helpers import assert_white


def test_demo_scene_flow_is_exact():
    """The analytic backward flow really maps frame t's pixels to where they were in frame t-1."""
    s = Scene(64)
    img0, img1 = s.image(4).astype(np.float32), s.image(5).astype(np.float32)
    flow = s.backward_flow(5)
    import cv2

    jj, ii = np.meshgrid(np.arange(s.w, dtype=np.float32), np.arange(s.h, dtype=np.float32))
    back = cv2.remap(img0, jj + flow[..., 0], ii + flow[..., 1], cv2.INTER_LINEAR)
    inside = (jj + flow[..., 0] > 1) & (jj + flow[..., 0] < s.w - 2)
    err_warped = np.median(np.abs(back - img1)[inside])
    err_static = np.median(np.abs(img0 - img1)[inside])
    assert err_warped < 0.2 * err_static


def test_demo_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "6", "--size", "48", "-q"]) == 0
    err = capsys.readouterr().err
    assert "preview.mp4" in err
    noise = np.load(out / "noise.npy")
    assert noise.shape == (6, 48, 72, 4)
    for t in (0, 5):
        assert_white(noise[t], f"demo frame {t}")
    for name in ("preview.mp4", "frames.png", "spacetime.png", "stats/report.json", "stats/overview.png"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "stats" / "report.json").read_text())
    assert rep["temporal"]["along_flow"] and rep["temporal"]["mean"] > 0.3


def test_compare_table(tmp_path, capsys):
    flows = np.zeros((5, 24, 32, 2), np.float32)
    flows[..., 0] = -0.5   # half a pixel: bilinear blurs, the ∫ methods split cells exactly
    np.save(tmp_path / "flows.npy", flows)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "flows.npy"), "-o", str(out), "--methods",
                 "particle,bilinear,resample", "-q"]) == 0
    table = capsys.readouterr().out
    assert "| particle |" in table and "| bilinear |" in table
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["particle"]["white"] and not rows["bilinear"]["white"]
    assert 0.4 < rows["particle"]["coherence_1"] < 0.6    # overlap with the nearest cell = 0.5
    assert abs(rows["resample"]["coherence_1"]) < 4 / np.sqrt(24 * 32 * 4)
    assert rows["particle"]["ms_per_frame"] > 0 and rows["particle"]["rss_mb"] > 0
    assert (out / "side_by_side.png").is_file() and (out / "table.csv").is_file()


def test_compare_ranks_fixed_and_fresh_last_on_moving_content(tmp_path, capsys):
    """The demo scene's exact flows (a panning background, a spinning drifting disc): on moving
    content, fixed noise (it stays put) and fresh noise score ≈ 0 and rank last; gp is only run
    when asked for."""
    from noisewarp.compare import default_methods

    assert "gp" not in default_methods() and "particle" in default_methods()
    s = Scene(48)
    np.save(tmp_path / "flows.npy", np.stack([s.backward_flow(t) for t in range(1, 9)]))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "flows.npy"), "-o", str(out), "--methods",
                 "fixed,resample,particle,nearest", "--max-lag", "4", "-q"]) == 0
    table = capsys.readouterr().out
    rows = json.loads((out / "compare.json").read_text())["rows"]
    order = [r["method"] for r in rows]
    assert set(order[-2:]) == {"fixed", "resample"}, order
    by = {r["method"]: r for r in rows}
    n = 48 * 72 * 4
    for m in ("fixed", "resample"):
        assert abs(by[m]["moving_mean"]) < 4.5 / np.sqrt(n), (m, by[m]["moving_mean"])
    assert by["particle"]["moving_1"] > 0.3 and by["particle"]["white"]
    assert by["fixed"]["static_long"] is None or by["fixed"]["static_long"] > 0.99
    assert table.index("| particle |") < table.index("| fixed |")
    assert (out / "coherence.png").is_file() and "moving" in (out / "table.md").read_text()
