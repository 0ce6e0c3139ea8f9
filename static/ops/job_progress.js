// Polls a training job's progress JSON and redraws the facts, the chart, the epoch table
// and the log until the job has finished.
(() => {
  const root = document.getElementById("job");
  if (!root) return;
  const url = root.dataset.progressUrl;
  const pollMs = Number(root.dataset.pollMs || 2000);
  const field = (name) => root.querySelector(`[data-field="${name}"]`);
  // Keys of a progress entry that are not series to plot.
  const NOT_SERIES = new Set(["epoch", "max_epochs"]);
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

  const formatTime = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "–");
  const formatNumber = (value) => (typeof value === "number" ? value.toFixed(4).replace(/\.?0+$/, "") : String(value));

  function fillFacts(list, entries) {
    list.replaceChildren();
    for (const [name, value] of entries) {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = value === null ? "–" : formatNumber(value);
      list.append(term, detail);
    }
  }

  let chart = null;
  function drawChart(progress) {
    if (typeof window.Chart === "undefined" || progress.length === 0) return;
    const names = [...new Set(progress.flatMap((entry) => Object.keys(entry)))]
      .filter((name) => !NOT_SERIES.has(name));
    const datasets = names.map((name, index) => ({
      label: name,
      data: progress.map((entry) => entry[name] ?? null),
      borderColor: COLOURS[index % COLOURS.length],
      backgroundColor: COLOURS[index % COLOURS.length],
      // Losses and metrics live on different scales: losses left, metrics right.
      yAxisID: name.includes("loss") ? "loss" : "metric",
      tension: 0.2,
    }));
    const labels = progress.map((entry) => entry.epoch);
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets = datasets;
      chart.update("none");
      return;
    }
    chart = new window.Chart(document.getElementById("progress-chart"), {
      type: "line",
      data: { labels, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: true, text: "epoch" } },
          loss: { type: "linear", position: "left", title: { display: true, text: "loss" } },
          metric: { type: "linear", position: "right", grid: { drawOnChartArea: false },
                    title: { display: true, text: "validation metric" } },
        },
      },
    });
  }

  function drawTable(progress) {
    const table = document.getElementById("progress-table");
    const names = ["epoch", ...new Set(progress.flatMap((entry) => Object.keys(entry))
      .filter((name) => !NOT_SERIES.has(name)))];
    const headRow = document.createElement("tr");
    for (const name of names) {
      const cell = document.createElement("th");
      cell.textContent = name;
      headRow.append(cell);
    }
    table.tHead.replaceChildren(headRow);
    const rows = progress.map((entry) => {
      const row = document.createElement("tr");
      for (const name of names) {
        const cell = document.createElement("td");
        cell.textContent = name === "epoch" && entry.max_epochs
          ? `${entry.epoch} / ${entry.max_epochs}`
          : (entry[name] === undefined ? "–" : formatNumber(entry[name]));
        row.append(cell);
      }
      return row;
    });
    table.tBodies[0].replaceChildren(...rows);
  }

  function render(job) {
    const status = field("status");
    status.textContent = job.cancel_requested && !job.finished ? `${job.status} (cancelling)` : job.status;
    status.className = `ops-status ops-status--${job.status}`;
    field("started_at").textContent = formatTime(job.started_at);
    field("finished_at").textContent = formatTime(job.finished_at);
    field("duration").textContent = job.duration_seconds === null ? "–" : `${Math.round(job.duration_seconds)} s`;
    field("attempts").textContent = job.attempts;
    field("model_version").textContent = job.model_version || "–";
    const error = field("error");
    error.textContent = job.error;
    error.hidden = !job.error;
    if (Object.keys(job.data_counts).length) fillFacts(field("data_counts"), Object.entries(job.data_counts));
    const metrics = Object.entries(job.metrics).filter(([name]) => name !== "training");
    if (metrics.length) fillFacts(field("metrics"), metrics);
    const log = field("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = job.log;
    if (atBottom) log.scrollTop = log.scrollHeight;
    drawTable(job.progress);
    drawChart(job.progress);
    const cancelForm = document.getElementById("cancel-form");
    if (cancelForm && job.finished) cancelForm.remove();
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const job = await response.json();
        render(job);
        if (job.finished) return;
      }
    } catch (error) {
      // A network blip: keep polling, the next answer redraws everything.
    }
    window.setTimeout(poll, pollMs);
  }

  poll();
})();
