//! Parse + validate of a large job file written with the HCL2 language
//! (variables, locals, functions, nested `dynamic` blocks) against the
//! same job written out as plain HCL, in the same run; both must give the
//! same job JSON, or the bench fails.
//!
//! `BERTH_BENCH_GROUPS` (default 100) sets the number of groups,
//! `BERTH_BENCH_ROUNDS` (default 30) the parses timed per form.

use std::fmt::Write;
use std::time::{Duration, Instant};

use berth::jobspec::{parse_job, VarInputs};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The job with the language: one `dynamic "group"` over a range, each
/// group's ports from a map through a nested `dynamic "port"`.
fn with_language(groups: usize) -> String {
    format!(
        r#"variable "image" {{
  type    = string
  default = "redis:7"
  validation {{
    condition     = length(var.image) > 0
    error_message = "An image is needed."
  }}
}}

locals {{
  groups = range({groups})
  ports  = {{ http = 8080, metrics = 9100 }}
}}

job "big" {{
  datacenters = ["dc1"]
  dynamic "group" {{
    for_each = local.groups
    labels   = [format("g%03d", group.value)]
    content {{
      count = 1 + group.value % 3
      network {{
        dynamic "port" {{
          for_each = local.ports
          labels   = [port.key]
          content {{
            to = port.value
          }}
        }}
      }}
      task "t" {{
        driver = "docker"
        config {{
          image = var.image
          ports = sort(keys(local.ports))
        }}
        env {{
          NAME = upper(format("g%03d", group.value))
          SLOT = tostring(group.value * 2)
        }}
        resources {{
          cpu    = 100
          memory = 64
        }}
      }}
    }}
  }}
}}
"#
    )
}

/// The same job, every value written out.
fn plain(groups: usize) -> String {
    let mut out = String::from("job \"big\" {\n  datacenters = [\"dc1\"]\n");
    for g in 0..groups {
        let name = format!("g{g:03}");
        let _ = write!(
            out,
            r#"  group "{name}" {{
    count = {count}
    network {{
      port "http" {{
        to = 8080
      }}
      port "metrics" {{
        to = 9100
      }}
    }}
    task "t" {{
      driver = "docker"
      config {{
        image = "redis:7"
        ports = ["http", "metrics"]
      }}
      env {{
        NAME = "{upper}"
        SLOT = "{slot}"
      }}
      resources {{
        cpu    = 100
        memory = 64
      }}
    }}
  }}
"#,
            count = 1 + g % 3,
            upper = name.to_uppercase(),
            slot = g * 2,
        );
    }
    out.push_str("}\n");
    out
}

/// The median of `rounds` parses of `src`.
fn time(name: &str, src: &str, rounds: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let parsed = parse_job(name, src, &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
            std::hint::black_box(parsed);
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let groups = env("BERTH_BENCH_GROUPS", 100);
    let rounds = env("BERTH_BENCH_ROUNDS", 30).max(1);
    let (language, written) = (with_language(groups), plain(groups));
    let a = parse_job("language.nomad.hcl", &language, &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
    let b = parse_job("plain.nomad.hcl", &written, &VarInputs::default()).unwrap_or_else(|e| panic!("{e}"));
    let (a_json, b_json) = (serde_json::to_value(&a.job).unwrap(), serde_json::to_value(&b.job).unwrap());
    assert_eq!(a_json, b_json, "the two forms must give the same job");
    assert_eq!(a.job.task_groups.len(), groups);

    let plain_median = time("plain.nomad.hcl", &written, rounds);
    let language_median = time("language.nomad.hcl", &language, rounds);
    let ratio = language_median.as_secs_f64() / plain_median.as_secs_f64().max(1e-9);
    println!("jobspec parse + validate, {groups} groups, median of {rounds}:");
    println!("  plain HCL ({} bytes):              {:>9.3} ms", written.len(), plain_median.as_secs_f64() * 1e3);
    println!(
        "  variables, functions, dynamic ({} bytes): {:>9.3} ms ({ratio:.2}x the plain file)",
        language.len(),
        language_median.as_secs_f64() * 1e3
    );
}
