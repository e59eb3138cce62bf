"""report.json (the versioned contract), report.md (the table a person reads) and report.png."""

from __future__ import annotations

from pathlib import Path

from edgefire import artifacts
from edgefire.layout import CONFUSION_PNG, REPORT_JSON, REPORT_MD, REPORT_PNG

OUTPUTS = (REPORT_JSON, REPORT_MD, REPORT_PNG, CONFUSION_PNG)
FAILED = " ✗"


FIRMWARE_METRICS = {"arena_bytes": "TFLite Micro arena (RAM)", "flash_bytes": "flash"}


def describe_failure(gate: dict) -> str:
    """One sentence: which gate failed and by how much."""
    value, limit = gate["value"], gate["limit"]
    if gate["metric"] == "bytes":
        return (f"{gate['artifact']} is {value:,} bytes, {value - limit:,} over the "
                f"{limit:,}-byte target")
    if gate["metric"] in FIRMWARE_METRICS:
        return (f"{gate['artifact']} needs {value:,} bytes of {FIRMWARE_METRICS[gate['metric']]}"
                f", {value - limit:,} over the {limit:,} allowed")
    where = f"{gate['artifact']} in {gate['runtime']}" if "runtime" in gate else gate["artifact"]
    if gate["metric"] == "accuracy_drop":
        return (f"{where} drops {value:.2f} points from the float reference"
                f"{_uncertainty(gate)}, {value - limit:.2f} more than the {limit:.2f} "
                "allowed")
    return (f"{where} has accuracy {value:.4f}{_uncertainty(gate)}, "
            f"{limit - value:.4f} under the minimum {limit:.4f}")


def _uncertainty(gate: dict) -> str:
    """" (95% CI a to b, McNemar p = c)" where the report has them (older reports may not)."""
    parts = []
    if "ci95" in gate:
        low, high = gate["ci95"]
        digits = 2 if gate["metric"] == "accuracy_drop" else 4
        parts.append(f"95% CI {low:.{digits}f} to {high:.{digits}f}")
    if "mcnemar_p" in gate:
        parts.append(f"McNemar p = {gate['mcnemar_p']:.3g}")
    return f" ({', '.join(parts)})" if parts else ""


def table(result: dict) -> list[str]:
    """Markdown rows, one per artifact; cells of a failed gate are marked with ✗."""
    failed = {(g["artifact"], g["metric"]) for g in result["gates"] if not g["passed"]}
    gated = {g["artifact"] for g in result["gates"]}

    def mark(row, metric, text):
        return text + (FAILED if (row["name"], metric) in failed else "")

    lines = ["| artifact | format | precision | bytes | gzip bytes | < target | top-1 | drop "
             "(points) | agreement | latency b=1 (ms) | throughput (img/s) | sparsity |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["artifacts"]:
        sparsity = "-" if row["sparsity"] is None else f"{row['sparsity']:.1%}"
        name = row["name"] + (" (gated)" if row["name"] in gated else "")
        size = mark(row, "bytes", f"{row['bytes']:,}")
        accuracy = mark(row, "accuracy", f"{row['accuracy']:.2%}")
        drop = mark(row, "accuracy_drop", f"{row['accuracy_drop']:.2f}")
        lines.append(
            f"| {name} | {row['format']} | {row['precision']} | {size} | "
            f"{row['gzip_bytes']:,} | {'yes' if row['under_target'] else 'no'} | {accuracy} | "
            f"{drop} | {row['agreement']:.2%} | {row['latency_ms']:.3f} | "
            f"{row['throughput_ips']:,.0f} | {sparsity} |")
    return lines


def skipped(result: dict) -> list[str]:
    """One line per runtime that did not run (not installed), however many files it missed."""
    reasons = {name: cell["skipped"] for row in result["artifacts"]
               for name, cell in row.get("runtimes", {}).items() if "skipped" in cell}
    return [f"{name}: {reason}, skipped" for name, reason in reasons.items()]


def printed(result: dict) -> list[str]:
    """What a command prints of a report: its table and the runtimes that did not run."""
    return [*table(result), *skipped(result)]


def matrix_table(result: dict) -> list[str]:
    """Each file in each runtime: images run, top-1, drop from the reference on those images,
    agreement with the file's native runtime, latency; or why the runtime did not run it."""
    lines = ["| artifact | runtime | images | top-1 | drop (points) | 95% CI | agreement with "
             "native | latency b=1 (ms) |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for row in result["artifacts"]:
        for name, cell in row.get("runtimes", {}).items():
            if "accuracy" not in cell:
                why = cell.get("skipped") or cell["error"]
                lines.append(f"| {row['name']} | {name} | - | {why} | | | | |")
                continue
            low, high = cell["drop_ci95"]
            lines.append(f"| {row['name']} | {name} | {cell['images']:,} | "
                         f"{cell['accuracy']:.2%} | {cell['accuracy_drop']:.2f} | "
                         f"{low:.2f} to {high:.2f} | {cell['agreement']:.2%} | "
                         f"{cell['latency_ms']:.3f} |")
    return lines


def microcontroller_lines(result: dict) -> list[str]:
    """RAM (TFLite Micro arena) and flash (the file) of every file TFLite Micro ran, and why
    it could not run the others."""
    lines = []
    for row in result["artifacts"]:
        cell = row.get("runtimes", {}).get("tflite-micro")
        if cell and "arena_bytes" in cell:
            lines.append(f"- {row['name']}: arena {cell['arena_bytes']:,} bytes of RAM, flash "
                         f"{row['bytes']:,} bytes (the file)")
        elif cell and cell.get("error"):
            lines.append(f"- {row['name']}: {cell['error']}")
    return lines + firmware_lines(result.get("mcu"))


def firmware_lines(pack: dict | None) -> list[str]:
    """The firmware pack's arena constant and flash, what is measured and what estimated."""
    if not pack:
        return []
    model = pack["flash_model_bytes"]
    floats = pack.get("float_operators")
    in_float = (f"; not full-integer: {', '.join(floats)} run in float on the microcontroller"
                if floats else "")
    return [f"- Firmware pack `mcu/` ({pack['model']}): `kTensorArenaSize` "
            f"{pack['arena_bytes']:,} bytes (the {pack['arena_measured_bytes']:,} measured, "
            f"plus a margin); flash {model:,} bytes of model, plus TFLite Micro's core runtime, "
            f"about {pack['runtime_flash_estimate_bytes']:,} bytes on a Cortex-M3 (its "
            "documentation's estimate, not measured here) and the kernels of "
            f"{', '.join(pack['operators'])}{in_float}", *model_parts(pack)]


def model_parts(pack: dict) -> list[str]:
    """Where the model's flash goes (`tflite_file.byte_breakdown`), for reports that have it."""
    parts = pack.get("flash_model_parts")
    if not parts:
        return []
    share = {name: f"{parts[name]:,} ({parts[name] / pack['flash_model_bytes']:.1%})"
             for name in parts}
    return [f"- The model's {pack['flash_model_bytes']:,} bytes: tensor data (weights, biases) "
            f"{share['tensor_data']}, quantization parameters (per channel, a float32 scale "
            f"and an int64 zero point) {share['quantization_parameters']}, tensor names "
            f"{share['names']}, metadata {share['metadata']}, flatbuffer tables "
            f"{share['tables']}"]


def fallback_summary(record: dict) -> str:
    """One sentence: what the accuracy-aware fallback kept, and whether it is full-integer."""
    first, chosen = record["attempts"][0], record["chosen"]
    kept = next(a for a in record["attempts"] if a["attempt"] == chosen)
    integer = ("full-integer" if record["full_integer"] else
               f"no longer full-integer: {', '.join(record['float_layers'])} in float")
    budget = "within" if record["within_budget"] else "still over"
    skipped = "".join(f"; skipped {s['attempt']}: {s['why']}"
                      for s in record.get("skipped", []))
    return (f"int8 dropped {first['val_drop']:.2f} points on validation, over the "
            f"{record['max_drop']:.2f} allowed; after {len(record['attempts']) - 1} more "
            f"attempt(s) kept '{chosen}' ({kept['val_drop']:.2f} points, {budget} budget, "
            f"{integer}){skipped}")


def fallback_lines(record: dict) -> list[str]:
    lines = [fallback_summary(record), "", "| attempt | validation top-1 | drop (points) | "
             "bytes | layers in float |", "|---|---:|---:|---:|---|"]
    lines += [f"| {a['attempt']} | {a['val_accuracy']:.2%} | {a['val_drop']:.2f} | "
              f"{a['bytes']:,} | {', '.join(a['float_layers']) or '-'} |"
              for a in record["attempts"]]
    return lines


def layer_error_lines(error: dict) -> list[str]:
    """The layers where int8 departs most from float, from quantize's debugger run."""
    if "error" in error:
        return [f"The quantization debugger could not run: {error['error']}"]
    lines = [f"TensorFlow Lite's QuantizationDebugger on {error['images']:,} {error['split']} "
             "images; RMSE of each quantized tensor against its float value, over its scale "
             "(rounding alone gives about 0.29). The largest:", "",
             "| layer | op | RMSE / scale | RMSE | scale |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['op']} | {r['rmse_over_scale']} | {r['rmse']:.4g} | "
              f"{r['scale']:.4g} |" for r in error["layers"]]
    return lines


def focus(result: dict) -> dict:
    """The artifact the per-class sections show: the first gated file, else the reference."""
    gated = [g["artifact"] for g in result["gates"]]
    by_name = {row["name"]: row for row in result["artifacts"]}
    return by_name[gated[0]] if gated else by_name[result["reference"]]


def cell(text: str) -> str:
    """A user's text (a class name) as one inert markdown table cell: HTML escaped, so a
    viewer that renders HTML shows it as text, and `|` and line breaks escaped."""
    import html

    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ").replace(
        "\r", " ")


def chart_text(text: str) -> str:
    """A user's text as a matplotlib label: `$` would start math mode."""
    return text.replace("$", r"\$")


def tick_labels(classes: list[str]) -> tuple[list[str], bool]:
    """Class names as a chart's tick labels, or their indices when the chart's font lacks a
    glyph of some name (CJK names without a CJK font would be rows of empty boxes); True
    when the indices stand in."""
    from matplotlib import font_manager, ft2font

    font = ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties()))
    glyphs = font.get_charmap()
    if all(ord(char) in glyphs for name in classes for char in name if not char.isspace()):
        return [chart_text(name) for name in classes], False
    return [str(i) for i in range(len(classes))], True


def class_table(result: dict) -> list[str]:
    """Per-class top-1 of every artifact (rows: classes), with each class's test images."""
    rows = result["artifacts"]
    counts = [sum(line) for line in focus(result)["confusion"]]
    lines = ["| class | test images | " + " | ".join(r["name"] for r in rows) + " |",
             "|---|---:|" + "---:|" * len(rows)]
    for i, name in enumerate(result["classes"]):
        cells = ["-" if r["class_accuracy"][i] is None else f"{r['class_accuracy'][i]:.2%}"
                 for r in rows]
        lines.append(f"| {cell(name)} | {counts[i]:,} | " + " | ".join(cells) + " |")
    return lines


def stats_note() -> str:
    from edgefire.report import stats

    return f"{stats.RESAMPLES:,} bootstrap resamples of the test images (seed {stats.SEED})"


def uncertainty_table(result: dict) -> list[str]:
    lines = ["| artifact | top-1 | 95% CI | drop (points) | 95% CI | McNemar p |",
             "|---|---:|---|---:|---|---:|"]
    for row in result["artifacts"]:
        low, high = row["accuracy_ci95"]
        drop_low, drop_high = row["drop_ci95"]
        lines.append(f"| {row['name']} | {row['accuracy']:.2%} | {low:.2%} to {high:.2%} | "
                     f"{row['accuracy_drop']:.2f} | {drop_low:.2f} to {drop_high:.2f} | "
                     f"{row['mcnemar_p']:.3g} |")
    return lines


def confusion_table(row: dict, classes: list[str]) -> list[str]:
    """The confusion matrix as markdown: rows are true classes, columns predicted ones."""
    lines = ["| true \\ predicted | " + " | ".join(map(cell, classes)) + " |",
             "|---|" + "---:|" * len(classes)]
    lines += [f"| {cell(name)} | " + " | ".join(str(n) for n in counts) + " |"
              for name, counts in zip(classes, row["confusion"], strict=True)]
    return lines


def chance_line(result: dict) -> str:
    """The warning of a build whose float reference scores within chance."""
    learned, reference = result["learned"], result["artifacts"][0]
    return (f"{reference['name']} scores {reference['accuracy']:.1%} top-1, within chance "
            f"for {len(result['classes'])} classes (up to {learned['chance_upper']:.1%} on "
            f"{result['dataset']['test_images']:,} images): the model did not learn "
            f"({learned['epochs_trained']} epochs trained)")


def npu_lines(npu: dict) -> list[str]:
    on_cpu = npu["cpu_operators"]
    cpu = f" ({', '.join(npu['cpu_operator_types'])})" if npu["cpu_operator_types"] else ""
    return [f"Vela {npu['vela_version']} for {npu['target']} ({npu['system_config']}, "
            f"{npu['memory_mode']}, {npu['clock_mhz']:g} MHz): {npu['cycles']:,} cycles, "
            f"about {npu['inference_ms_estimate']:.3f} ms an image at that clock; SRAM "
            f"{npu['sram_bytes']:,} bytes, flash {npu['flash_bytes']:,} bytes, DRAM "
            f"{npu.get('dram_bytes', 0):,} bytes; "
            f"{npu['npu_operators']} operators on the NPU, {on_cpu} on the CPU{cpu}. "
            "The compiled model is in npu/."]


def markdown(result: dict) -> str:
    data = result["dataset"]
    gates = [f"- {'passed' if g['passed'] else 'FAILED'}: {g['name']} = {g['value']:,} "
             f"(limit {g['limit']:,})" for g in result["gates"]]
    lines = [f"# edgefire report ({'passed' if result['passed'] else 'FAILED'})", "",
             f"Data: {data['source']} test split, {data['test_images']:,} images. Float "
             f"reference: {result['reference']}. Target: {result['target_bytes']:,} bytes.",
             "Accuracy is top-1 measured by running each file in its native runtime (Keras, "
             "LiteRT interpreter, onnxruntime; the others under Runtimes); latency is batch 1 "
             "on one thread.", "",
             *table(result), "", "Gates:", *gates, ""]
    if not result.get("learned", {}).get("above_chance", True):
        lines[1:1] = ["", f"**Warning: {chance_line(result)}**"]
    if "runtimes" in result["artifacts"][0]:
        lines += ["## Runtimes", "",
                  "Each file in every runtime that takes it. TFLite Micro runs one image per "
                  "invoke on its reference kernels, on a class-balanced subset; its drop is "
                  "measured against the float reference on the same images.", "",
                  *matrix_table(result), "", *skipped(result), ""]
        micro = microcontroller_lines(result)
        if micro:
            lines += ["## Microcontrollers", "",
                      "TFLite Micro's allocation recorder (the Python interpreter's reference "
                      "kernels; optimized kernels such as CMSIS-NN may need scratch memory "
                      "of their own):", "", *micro, ""]
    if result.get("npu"):
        lines += ["## Arm Ethos-U NPU (Vela's estimates, not measurements)", "",
                  *npu_lines(result["npu"]), ""]
    if result.get("fallback") and len(result["fallback"]["attempts"]) > 1:
        lines += ["## Accuracy-aware int8", "", *fallback_lines(result["fallback"]), ""]
    if "layer_error" in result:
        lines += ["## Quantization error per layer", "",
                  *layer_error_lines(result["layer_error"]), ""]
    if "accuracy_ci95" in result["artifacts"][0]:
        lines += ["## Uncertainty", "",
                  f"95% intervals from {stats_note()}; McNemar's exact p-value of the images "
                  "only one of the file and the reference gets right.", "",
                  *uncertainty_table(result), ""]
    if "classes" in result:
        shown = focus(result)
        lines += ["## Per-class top-1", "", *class_table(result), "",
                  f"## Confusion matrix of {shown['name']}", "",
                  *confusion_table(shown, result["classes"]), "",
                  f"The same as a chart: {CONFUSION_PNG}.", ""]
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot, drawing into files (there is no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_chart(result: dict, path: Path) -> None:
    """The focus artifact's confusion matrix, row-normalized, with counts in the cells."""
    plt = pyplot()
    import numpy as np

    shown = focus(result)
    classes, by_index = tick_labels(result["classes"])
    counts = np.asarray(shown["confusion"], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    if len(classes) <= 20:
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    index_note = " (class index: the line of labels.txt, from 0)" if by_index else ""
    ax.set_xlabel(f"predicted{index_note}")
    ax.set_ylabel("true")
    ax.set_title(f"{shown['name']}: top-1 {shown['accuracy']:.2%}")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def chart(result: dict, path: Path) -> None:
    """Accuracy against bytes, one point per artifact, with the target line drawn."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    by_size = sorted(result["artifacts"], key=lambda r: r["bytes"])
    for rank, row in enumerate(by_size):
        ax.scatter(row["bytes"], row["accuracy"] * 100)
        # neighbours alternate above and below, further out each time, so labels never collide
        offset = (rank // 2 + 1) * 14 * (1 if rank % 2 == 0 else -1)
        ax.annotate(row["name"], (row["bytes"], row["accuracy"] * 100), fontsize=8,
                    textcoords="offset points", xytext=(4, offset),
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.axvline(result["target_bytes"], color="red", linestyle="--",
               label=f"target {result['target_bytes']:,} bytes")
    accuracies = [row["accuracy"] * 100 for row in result["artifacts"]]
    ax.set_ylim(min(accuracies) - 1, max(accuracies) + 1)  # a few hundredths must not look huge
    ax.set_xlim(0, max(max(r["bytes"] for r in result["artifacts"]),
                       result["target_bytes"]) * 1.25)
    ax.set_xlabel("file size (bytes)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"accuracy against size on {result['dataset']['name']}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def write(folder: Path, result: dict) -> None:
    artifacts.write_json(folder / REPORT_JSON, result)
    artifacts.write_text(folder / REPORT_MD, markdown(result))
    chart(result, folder / REPORT_PNG)
    confusion_chart(result, folder / CONFUSION_PNG)


def load(folder: Path) -> dict:
    """The report.json verify wrote last."""
    return artifacts.read_json(folder / REPORT_JSON, "report", "verify")
