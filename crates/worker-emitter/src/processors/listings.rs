//! `listings`: `{listingId, status}` -> `LISTING_UPDATE` when the status changed.

use event_bus::{Action, Channel, EventType, NewEvent, Payload};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::job::{check_id, parse, Decision, JobError, JobInput, Plan, Processor};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListingJob {
    listing_id: String,
    status: String,
}

/// The listings processor.
#[derive(Clone, Debug)]
pub struct Listings {
    /// Queue name.
    pub queue: String,
}

impl Processor for Listings {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn channel(&self) -> Channel {
        Channel::LISTINGS
    }

    fn plan<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Result<Plan, JobError>> {
        Box::pin(async move {
            let l: ListingJob = parse(&job.data)?;
            check_id("listingId", &l.listing_id)?;
            if l.status.is_empty() || l.status.len() > 64 || l.status.chars().any(char::is_control) {
                return Err(JobError::Invalid("status: must be 1-64 characters".into()));
            }
            Ok(Plan {
                entity: l.listing_id.clone(),
                decide: Box::new(move |current| {
                    if current == Some(l.status.as_str()) {
                        return Ok(Decision::Unchanged("unchanged"));
                    }
                    let data = json!({"status": l.status, "previousStatus": current});
                    Ok(Decision::Emit {
                        event: NewEvent::new(
                            EventType::LISTING_UPDATE,
                            Payload::new(l.listing_id.clone(), Action::Updated).with_data(data),
                        ),
                        state: l.status.clone(),
                    })
                }),
            })
        })
    }
}
