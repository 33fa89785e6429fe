//! `loadtest report`: two real run summaries in, one SVG with both runs and a markdown table
//! out.

use crate::support::{Echo, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draws_two_runs_side_by_side() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, extra) in [
        ("alpha-run", "--http2"),
        ("beta-run", "--new-connection-per-request"),
    ] {
        let json = dir.path().join(format!("{name}.json"));
        loadtest::run::execute(config(&[
            "--scenario",
            "direct",
            "--target",
            &echo.url(),
            "--concurrency",
            "2",
            "--duration",
            "300ms",
            "--name",
            name,
            extra,
            "--json",
            json.to_str().unwrap(),
        ]))
        .await
        .unwrap();
        files.push(json);
    }

    let runs = loadtest::report::load(&files).unwrap();
    let svg = dir.path().join("chart.svg");
    loadtest::report::render_svg(&runs, &svg, "Two runs").unwrap();
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("<svg"));
    for text in ["alpha-run", "beta-run", "Two runs", "p99.9", "Throughput"] {
        assert!(drawn.contains(text), "the chart shows {text}");
    }

    let table = loadtest::report::markdown(&runs);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.contains("| alpha-run | direct | 2 conc. | h2 |"),
        "{table}"
    );
    assert!(
        table.contains("| beta-run | direct | 2 conc. | h1, new conn |"),
        "{table}"
    );
}

#[test]
fn refuses_files_that_are_not_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    let err = loadtest::report::load(&[bad]).unwrap_err();
    assert!(format!("{err:#}").contains("not a loadtest run summary"));
}
