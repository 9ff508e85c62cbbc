//! A route's publish hook on its hub: what a client's publication tells the application
//! (`hook_publish`), checked for room before the publication is stored and told once it is.

use std::sync::Arc;

use super::journal::Publication;
use super::{Hub, HubError};

/// What is told of each publication a client makes through a route (its publish hook).
pub trait PublishHook: Send + Sync {
    /// Whether the call for `p` fits now; if not, `p` is refused (not stored).
    fn has_room(&self, p: &Publication) -> bool;
    /// `p` is stored; subscribers see it as `id`; `by` published it (a token's `sub`).
    fn published(&self, p: &Publication, by: Option<&str>, id: &str);
}

impl Hub {
    /// Sets (or clears) what is told of clients' publications: the route in force's hook.
    pub fn set_publish_hook(&self, hook: Option<Arc<dyn PublishHook>>) {
        *self.publish_hook.write().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// [`Hub::publish`] for a client's publication (by `by`): refused while the publish hook's
    /// queue is full; once stored, the hook is told. An answer that may or may not mean stored
    /// ([`HubError::Unknown`]) tells the hook nothing.
    pub async fn publish_from_client(
        &self,
        p: Publication,
        by: Option<&str>,
    ) -> Result<u64, HubError> {
        let hook = self
            .publish_hook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(hook) = hook else {
            return self.publish(p).await;
        };
        if !hook.has_room(&p) {
            return Err(HubError::Busy(
                "the route's hook queue is full (hook_queue_bytes): not stored, try again".into(),
            ));
        }
        let told = p.clone();
        let id = self.publish(p).await?;
        let shown = told.public_id.clone().unwrap_or_else(|| id.to_string());
        hook.published(&told, by, &shown);
        Ok(id)
    }
}
