//! Events to containerd: each is a protobuf message wrapped in an `Envelope` and forwarded over
//! containerd's ttrpc socket (`TTRPC_ADDRESS`), as containerd's own shims do.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{MessageDyn, MessageFull};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use std::sync::Mutex;

pub struct Publisher {
    address: String,
    namespace: String,
    client: Mutex<Option<containerd_shim_protos::EventsClient>>,
}

impl Publisher {
    pub fn new(address: &str, namespace: &str) -> Publisher {
        Publisher {
            address: address.to_string(),
            namespace: namespace.to_string(),
            client: Mutex::new(None),
        }
    }

    /// Sends `event` on `topic`. A failure is logged (to containerd's log) and otherwise
    /// ignored: containerd also learns a task's end from `Wait`.
    pub fn publish<M: MessageFull>(&self, topic: &str, event: &M) {
        if let Err(e) = self.try_publish(topic, event) {
            eprintln!("containerd-shim-paddock-v1: cannot publish {topic}: {e}");
            if let Ok(mut c) = self.client.lock() {
                *c = None; // reconnect next time
            }
        }
    }

    fn try_publish<M: MessageFull>(&self, topic: &str, event: &M) -> Result<(), String> {
        if self.address.is_empty() {
            return Err("TTRPC_ADDRESS is not set".into());
        }
        let any = Any {
            type_url: event.descriptor_dyn().full_name().to_string(),
            value: event.write_to_bytes().map_err(|e| e.to_string())?,
            ..Default::default()
        };
        let req = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(crate::now()).into(),
                namespace: self.namespace.clone(),
                topic: topic.to_string(),
                event: Some(any).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let mut guard = self.client.lock().map_err(|_| "publisher lock poisoned")?;
        if guard.is_none() {
            let addr = if self.address.starts_with("unix://") {
                self.address.clone()
            } else {
                format!("unix://{}", self.address)
            };
            let client = ttrpc::Client::connect(&addr)
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            *guard = Some(containerd_shim_protos::EventsClient::new(client));
        }
        let client = guard.as_ref().ok_or("no client")?;
        let ctx = ttrpc::context::with_timeout(5_000_000_000);
        client.forward(ctx, &req).map_err(|e| e.to_string())?;
        Ok(())
    }
}
