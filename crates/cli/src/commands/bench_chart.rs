//! The serving benchmark's chart: output throughput and TTFT against concurrency, one line
//! per server, drawn with `plotters` into a PNG (the font is embedded: no system fonts needed).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::bench_serve::Report;

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Draws `reports` (this run first, then baselines) into `path`.
/// A chart's quantity, read from one concurrency level.
type Metric = fn(&super::bench_serve::Level) -> f64;

pub fn draw(path: &Path, reports: &[&Report]) -> anyhow::Result<()> {
    register_font();
    let max_conc = reports.iter().flat_map(|r| r.levels.iter().map(|l| l.concurrency)).max().unwrap_or(1).max(2) as f64;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let title = format!(
        "{}: input ~{} tokens, output {} tokens",
        reports.first().map(|r| r.model.as_str()).unwrap_or(""),
        reports.first().map(|r| r.input_len).unwrap_or(0),
        reports.first().map(|r| r.output_len).unwrap_or(0)
    );
    let root = root.titled(&title, ("sans-serif", 22)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 2));
    let metrics: [(&str, Metric); 2] =
        [("output tokens/s", |l| l.output_throughput), ("TTFT p50 (ms)", |l| l.ttft_ms.p50)];
    for (panel, (name, metric)) in panels.iter().zip(metrics) {
        let max_y = reports.iter().flat_map(|r| r.levels.iter().map(metric)).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(name, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1f64..max_conc).log_scale(), 0f64..max_y)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("concurrent requests")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, r) in reports.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = r.levels.iter().map(|l| (l.concurrency as f64, metric(l))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(r.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
