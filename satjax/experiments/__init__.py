"""The paper's experiments as functions returning JSON-ready results, and one saver.

:func:`run_and_save` runs an experiment, prints its table, and writes NAME.json and NAME.png
atomically into a folder (:mod:`satjax.report`); the command line's ``satjax reproduce`` calls
it. The experiments: :mod:`.fig6` (1-D mixture and Table I), :mod:`.fig7` (Swiss roll under the
rotating force), :mod:`.table1` (Table I with exact and learned dynamics), :mod:`.fig8` (CFM on digits), :mod:`.schedules` (schedule optimisation); :mod:`.seeds` holds the statistics over trained models they share.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

NAMES = ("fig6", "table1", "fig7", "fig8", "schedules")


def _pm(v, se, digits=4):
    """'value ± se', or the status of a value that is not a number (None in strict JSON)."""
    if v is None:
        return "not computed"
    return f"{v:.{digits}g}" + ("" if se is None else f" ± {se:.2g}")


def _tables(name, res, console):
    if name == "fig6":
        console.table([(c["protocol"], c["perturb"], c["eta"], c["c1"], c["c2"], c["D0"],
                         ", ".join(f"{k}: {v}" for k, v in c["holds"].items()))
                       for c in res["cases"]],
                      ["protocol", "perturb", "eta", "c1", "c2 = wD", "D0", "verdicts"])
        console.say("all values exact (CDF transport and quadrature: standard error 0)")
        for spec, ok in res["eta_agrees_across_protocols"].items():
            if not ok:  # η cannot depend on the protocol (docs/theory.md §7): a numerical fault
                vals = ", ".join(f"{c['protocol']} {c['eta']!r}" for c in res["cases"]
                                 if c["perturb"] == spec)
                console.say(f"WARNING: eta of {spec} differs across protocols ({vals}); it "
                            "cannot in exact arithmetic; rerun, and report it if it persists")
        if res.get("table_i"):
            console.table([(r["family"], r["perturb"], r["eta"],
                            " / ".join(f"{v:.4g}" for v in r["paper_eta"]))
                           for r in res["table_i"]],
                          ["Table I family", "our start", "eta (exact)", "paper cos / cond-OT / OT"])
    elif name == "table1":
        learned = res["settings"]["seeds"] > 0
        console.table([(r["protocol"], r["family"], r["eta_exact"],
                        f"{r['eta_sampler']:.4g}",
                        _pm(r["eta_learned"], r["eta_learned_stderr"]) if learned else "-",
                        r["paper_eta"])
                       for r in res["rows"]],
                      ["protocol", "start", "eta exact flow", "eta exact v, sampler",
                       "eta learned ± se", "paper eta"])
        console.say(f"sampler: {res['settings']['sampler']}; exact values: CDF transport "
                    "(standard error 0); learned: mean ± s.e. over seeds")
        if learned:
            for k, v in res["W1_to_data"].items():
                c2 = res["c2_learned"][k]
                console.say(f"{k}: W1 to data {_pm(v['mean'], v['stderr'])}; c2 of the learned "
                            f"flow {_pm(c2['mean'], c2['stderr'])} (resolution "
                            f"{c2['resolution_error']:.1g}; exact path {c2['exact']:.5g})")
            for fam, v in res["verdict"].items():
                console.say(f"smaller c2 -> smaller learned eta, {fam}: {v['status']} "
                            f"(c2 order {' < '.join(v['order_by_c2'])})")
    elif name == "fig7":
        def pm_res(v, q):
            se, err = v[q + "_stderr"] or 0.0, v.get(q + "_error") or 0.0
            if v[q] is not None and se + err >= abs(v[q]) > 0:
                return f"unresolved (uncertainty {se + err:.2g})"
            return _pm(v[q], se or None, 5) + (f" (res. {err:.1g})" if err else "")

        if res["summary"]:
            console.table([(k, pm_res(v, "eta"), pm_res(v, "c1"), _pm(v["c2"], v["c2_stderr"]),
                            _pm(v["wD"], None), v.get("paper_eta"), v["method"])
                           for k, v in res["summary"].items()],
                          ["case", "eta", "c1", "c2 ± se", "wD", "paper eta", "method"])
        if res.get("learned"):
            lr = res["learned"]
            def pm_l(v, q):
                if v[q + "_status"] == "unresolved":
                    unc = v[q + "_resolution_error"] + v[q + "_stderr"]
                    return f"unresolved (uncertainty {unc:.2g})"
                return _pm(v[q], v[q + "_stderr"])

            console.table([(k, v["n_seeds"], pm_l(v, "eta"),
                            f"{v['eta_resolution_error']:.1g}", pm_l(v, "dW1"), pm_l(v, "c1"),
                            _pm(v["eq100_L_alpha"], v["eq100_L_alpha_stderr"]),
                            _pm(v["W1_to_data"], v["W1_to_data_stderr"]),
                            _pm(v["wD"], v["wD_stderr"]) if "wD" in v else "not measured")
                           for k, v in lr["summary"].items()],
                          ["learned", "models", "eta ± se", "res. error", "dW1 ± se", "c1 ± se",
                           "L_alpha ± se", "W1 to data ± se", "wD of the flow ± se"])
            console.say("learned: mean ± s.e. over the trained models (each measured with its "
                        "learned velocity by " + lr.get("transport", "the transport") + "; "
                        "'res. error' the largest resolution error)")
            if res.get("summary"):
                console.say(lr["statement"])
        console.say(res["statement"])
    elif name == "fig8":
        console.table([(c["loss"], c["n_models"], _pm(c["eta"], c["eta_stderr"]),
                        _pm(c["c2"], c["c2_stderr"]), c["ratio_eta_over_c2"],
                        _pm(c["W1_generated_to_data"], c["W1_generated_to_data_stderr"]),
                        c["D0"], c["holds"]["eta<=c2"])
                       for c in res["cases"]],
                      ["loss", "models", "eta ± se", "c2 ± se (G20)", "eta/c2",
                       "W1 to data ± se", "D0 (G21)", "eta<=c2"])
        for q, v in res["paired_ot_cfm_minus_cfm"].items():
            p = "n/a" if v["p_value"] is None else f"{v['p_value']:.3g}"
            console.say(f"ot-cfm - cfm, {q}: {_pm(v['mean_difference'], v['stderr'])} "
                        f"(paired over {v['n']} seeds, p = {p})")
        console.say("mean ± s.e. over trained models (training and particle noise together)")
    else:
        console.table([(k, v["c2_cosine"], v["c2_condot"],
                        f"{v['c2_optimised']:.5g} ± {v['c2_optimised_stderr']:.2g}",
                        v["W2sq_over_tau"], v["gap_to_W2"], v["beats_cosine_and_condot"])
                       for k, v in res["results"].items()],
                      ["data", "c2 cosine", "c2 cond-OT", "c2 optimised", "W2^2/tau", "gap",
                       "beats both"])


def run_and_save(name: str, folder: Path, console, **settings) -> dict:
    """Run experiment ``name``, print its table, write NAME.json and NAME.png into ``folder``."""
    from satjax import plotting
    from satjax.report import jsonable, write_json, write_png

    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}; choose one of {NAMES}")
    module = importlib.import_module(f"satjax.experiments.{name}")
    settings = {**settings, "folder": folder}
    accepted = inspect.signature(module.run).parameters
    kwargs = {k: v for k, v in settings.items() if k in accepted}
    bar = console.progress(0, name)

    def progress(i, n):
        bar.total = n
        bar.update(i - bar.n)

    res = jsonable(module.run(progress=progress, **kwargs))
    bar.close()
    _tables(name, res, console)
    folder = Path(folder)
    write_json(res, str(folder / f"{name}.json"))
    write_png(getattr(plotting, f"plot_{name if name != 'schedules' else 'schedules_study'}"),
              res, str(folder / f"{name}.png"))
    console.say(f"wrote {folder / (name + '.json')} and {folder / (name + '.png')} "
                f"({res['seconds']:.1f} s)")
    return res
