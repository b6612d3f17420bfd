// Sluice usage dashboard (templates/webui/usage.html): draws the report's series with plotly.js (served locally).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const data = document.getElementById("usage-chart");
  if (!data || typeof Plotly === "undefined") return;
  const chart = JSON.parse(data.textContent);
  const config = { displaylogo: false, responsive: true };
  const layout = (title) => ({ barmode: "stack", margin: { t: 10, r: 10, b: 40, l: 60 }, height: 320,
    xaxis: { type: "date", range: chart.range }, yaxis: { title: { text: title }, rangemode: "tozero" }, legend: { orientation: "h" } });
  // a bar spans its period: centred on the period's middle
  const middles = chart.periods.map((start) => new Date(Date.parse(start) + chart.step_ms / 2).toISOString());
  for (const [id, field, title] of [["chart-requests", "requests", "requests"], ["chart-tokens", "tokens", "tokens"]]) {
    const traces = Object.entries(chart.series).map(([name, values]) => (
      { type: "bar", name: name, x: middles, y: values[field], width: chart.step_ms * 0.8 }));
    Plotly.newPlot(id, traces, layout(title), config);
  }
});
