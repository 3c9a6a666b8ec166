// Small time-series line charts on <canvas>: no library, no network.
//
//   const chart = new LineChart(canvas, {series: [{key, label, color, dash}], unit: "ms"});
//   chart.setData([{t: unixSeconds, values: {key: number|null}}, ...]);
//
// After each draw the canvas carries data-points (points drawn), data-series (series with
// at least one value) and data-plot ("x,y,w,h" of the plot area, in CSS pixels), so tests
// and people can tell an empty chart from a drawn one.
"use strict";

(function () {
  const FONT = "12px system-ui, sans-serif";
  const PAD = {left: 56, right: 12, top: 26, bottom: 24};

  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const unit = raw / power;
    const nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10;
    return nice * power;
  }

  function formatValue(value) {
    if (value === 0) return "0";
    const abs = Math.abs(value);
    if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return (value / 1e3).toFixed(0) + "k";
    if (abs >= 100) return value.toFixed(0);
    if (abs >= 1) return value.toFixed(1).replace(/\.0$/, "");
    return value.toFixed(2);
  }

  function formatTime(seconds) {
    const d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  }

  class LineChart {
    constructor(canvas, options) {
      this.canvas = canvas;
      this.series = options.series;
      this.unit = options.unit || "";
      this.spanSeconds = options.spanSeconds || 900;
      this.points = [];
      this.canvas.dataset.points = "0";
      this.canvas.dataset.series = "0";
    }

    setSeries(series) {
      this.series = series;
    }

    setData(points) {
      this.points = points;
      this.draw();
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth || 480;
      const height = canvas.clientHeight || 220;
      if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
      if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, width, height);
      ctx.font = FONT;

      const plot = {
        x: PAD.left,
        y: PAD.top,
        w: Math.max(10, width - PAD.left - PAD.right),
        h: Math.max(10, height - PAD.top - PAD.bottom),
      };
      canvas.dataset.plot = [plot.x, plot.y, plot.w, plot.h].join(",");

      const points = this.points;
      const end = points.length ? points[points.length - 1].t : Date.now() / 1000;
      const start = end - this.spanSeconds;
      const visible = points.filter((p) => p.t >= start);
      let top = 0;
      const withData = new Set();
      for (const p of visible) {
        for (const s of this.series) {
          const v = p.values[s.key];
          if (typeof v === "number" && isFinite(v)) {
            top = Math.max(top, v);
            withData.add(s.key);
          }
        }
      }
      const step = niceStep(top > 0 ? top : 1, 4);
      const yMax = Math.max(step, Math.ceil((top * 1.05) / step) * step);
      const xOf = (t) => plot.x + ((t - start) / this.spanSeconds) * plot.w;
      const yOf = (v) => plot.y + plot.h - (v / yMax) * plot.h;

      // Grid and axes.
      ctx.strokeStyle = "#e6e6e6";
      ctx.fillStyle = "#555";
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let v = 0; v <= yMax + step / 2; v += step) {
        const y = Math.round(yOf(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(plot.x, y);
        ctx.lineTo(plot.x + plot.w, y);
        ctx.stroke();
        ctx.fillText(formatValue(v) + (v === yMax && this.unit ? " " + this.unit : ""), plot.x - 6, y);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let i = 0; i <= 3; i++) {
        const t = start + (this.spanSeconds * i) / 3;
        ctx.fillText(formatTime(t), Math.min(Math.max(xOf(t), plot.x + 30), plot.x + plot.w - 30),
          plot.y + plot.h + 6);
      }

      // Lines: a gap where a value is missing, or where points are more than 5 s apart.
      let drawn = 0;
      ctx.save();
      ctx.beginPath();
      ctx.rect(plot.x, plot.y, plot.w, plot.h);
      ctx.clip();
      for (const s of this.series) {
        ctx.strokeStyle = s.color;
        ctx.fillStyle = s.color;
        ctx.lineWidth = 2;
        ctx.setLineDash(s.dash ? [6, 4] : []);
        ctx.beginPath();
        let previous = null;
        for (const p of visible) {
          const v = p.values[s.key];
          if (typeof v !== "number" || !isFinite(v)) {
            previous = null;
            continue;
          }
          const x = xOf(p.t);
          const y = yOf(v);
          if (previous === null || p.t - previous > 5) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
          if (previous === null) ctx.fillRect(x - 1, y - 1, 2, 2);
          previous = p.t;
          drawn++;
        }
        ctx.stroke();
      }
      ctx.restore();
      ctx.setLineDash([]);

      // Legend, above the plot.
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      let x = plot.x;
      for (const s of this.series) {
        ctx.strokeStyle = s.color;
        ctx.lineWidth = 2;
        ctx.setLineDash(s.dash ? [4, 3] : []);
        ctx.beginPath();
        ctx.moveTo(x, 11);
        ctx.lineTo(x + 16, 11);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = withData.has(s.key) ? "#222" : "#aaa";
        ctx.fillText(s.label, x + 20, 11);
        x += 28 + ctx.measureText(s.label).width;
      }

      canvas.dataset.points = String(drawn);
      canvas.dataset.series = String(withData.size);
    }
  }

  window.LineChart = LineChart;
})();
