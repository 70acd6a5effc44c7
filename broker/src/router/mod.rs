//! PLACEHOLDER router (replaced by the router branch): naive matching.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::codec::SubscriptionOptions;
use crate::types::{ClientId, QoS, TopicFilter, TopicName};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("invalid shared subscription")]
    InvalidShared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    New,
    Replaced,
}

pub struct Delivery<S> {
    pub client_id: ClientId,
    pub handle: S,
    pub qos: QoS,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<u32>,
}

type Subs<S> = HashMap<(ClientId, TopicFilter), (SubscriptionOptions, Option<u32>, S)>;

pub struct Router<S> {
    subs: RwLock<Subs<S>>,
}

impl<S: Clone> Default for Router<S> {
    fn default() -> Self {
        Self::new()
    }
}

pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

impl<S: Clone> Router<S> {
    pub fn new() -> Self {
        Router {
            subs: RwLock::new(HashMap::new()),
        }
    }
    pub fn subscribe(
        &self,
        client: &ClientId,
        filter: &TopicFilter,
        opts: SubscriptionOptions,
        subscription_id: Option<u32>,
        handle: S,
    ) -> Result<SubscribeOutcome, RouterError> {
        let old = self.subs.write().insert(
            (client.clone(), filter.clone()),
            (opts, subscription_id, handle),
        );
        Ok(if old.is_some() {
            SubscribeOutcome::Replaced
        } else {
            SubscribeOutcome::New
        })
    }
    pub fn unsubscribe(&self, client: &ClientId, filter: &TopicFilter) -> bool {
        self.subs
            .write()
            .remove(&(client.clone(), filter.clone()))
            .is_some()
    }
    pub fn unsubscribe_all<'a>(
        &self,
        client: &ClientId,
        filters: impl IntoIterator<Item = &'a TopicFilter>,
    ) {
        let mut subs = self.subs.write();
        for f in filters {
            subs.remove(&(client.clone(), f.clone()));
        }
    }
    pub fn route(&self, topic: &TopicName, publisher: Option<&ClientId>) -> Vec<Delivery<S>> {
        let subs = self.subs.read();
        let mut out: HashMap<ClientId, Delivery<S>> = HashMap::new();
        for ((c, f), (o, id, h)) in subs.iter() {
            if !matches(f.as_str(), topic.as_str()) || (o.no_local && publisher == Some(c)) {
                continue;
            }
            let d = out.entry(c.clone()).or_insert_with(|| Delivery {
                client_id: c.clone(),
                handle: h.clone(),
                qos: o.qos,
                retain_as_published: false,
                subscription_ids: vec![],
            });
            d.qos = d.qos.max(o.qos);
            d.retain_as_published |= o.retain_as_published;
            d.subscription_ids.extend(id);
        }
        out.into_values().collect()
    }
    pub fn subscription_count(&self) -> usize {
        self.subs.read().len()
    }
}

pub struct RetainedStore<M> {
    msgs: RwLock<HashMap<TopicName, M>>,
}

impl<M: Clone> Default for RetainedStore<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> RetainedStore<M> {
    pub fn new() -> Self {
        RetainedStore {
            msgs: RwLock::new(HashMap::new()),
        }
    }
    pub fn set(&self, topic: &TopicName, msg: Option<M>) {
        let mut m = self.msgs.write();
        match msg {
            Some(msg) => {
                m.insert(topic.clone(), msg);
            }
            None => {
                m.remove(topic);
            }
        }
    }
    pub fn matching(&self, filter: &TopicFilter) -> Vec<M> {
        self.msgs
            .read()
            .iter()
            .filter(|(t, _)| matches(filter.as_str(), t.as_str()))
            .map(|(_, m)| m.clone())
            .collect()
    }
    pub fn len(&self) -> usize {
        self.msgs.read().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
