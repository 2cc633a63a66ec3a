//! The job data schemas in proto-schemas/ and the processors agree: every case in
//! proto-schemas/jobs/cases.json is accepted by both or refused by both.

use serde_json::Value;
use testkit::schemas::{dir, Schemas};
use worker_emitter::{
    config::EmitterConfig,
    job::{JobError, JobInput},
    runner::builtin,
};

#[tokio::test]
async fn schemas_and_processors_agree() {
    let schemas = Schemas::load();
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("jobs/cases.json")).unwrap()).unwrap();
    // The cases' sources are on loopback (a valid job's URL, refused only by the deployment's
    // address policy, which is tested on its own).
    let mut config = EmitterConfig::default();
    config.inventory.allow_private_sources = true;
    let processors = builtin(&config);
    let mut checked = 0;
    for p in &processors {
        let queue = p.queue().to_owned();
        let file = format!("job-{queue}.schema.json");
        for (valid, list) in [(true, &cases[&queue]["valid"]), (false, &cases[&queue]["invalid"])] {
            for data in list.as_array().unwrap_or_else(|| panic!("cases for {queue}")) {
                let by_schema = schemas.validator(&file).is_valid(data);
                let job = JobInput {
                    queue: queue.clone(),
                    id: "1".into(),
                    name: "case".into(),
                    data: data.clone(),
                    attempts_made: 0,
                    traceparent: None,
                };
                // A valid sourceUrl is fetched; only whether the data was accepted matters here.
                let by_processor = match p.plan(&job).await {
                    Ok(_) => true,
                    Err(JobError::Invalid(_)) => false,
                    Err(JobError::Transient(_) | JobError::Unavailable(_)) => true,
                };
                assert_eq!(by_schema, valid, "{file} on {data}");
                assert_eq!(by_processor, valid, "the {queue} processor on {data}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} cases");
}
