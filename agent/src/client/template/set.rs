//! One task's templates following the servers. The first render
//! discovers what the templates read, fetches it and renders again until
//! nothing is missing (waiting, as Nomad does, for variables that do not
//! exist yet). Afterwards one blocking read per task follows everything
//! they read; when a template's output changes it is written again, after
//! its `wait` (quiet time, at most its max) and `splay`, and the caller
//! learns which templates changed to act on their `change_mode`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::TemplateError;
use crate::client::rpc::{RpcError, ServerRpc};
use crate::structs::{Node, Template};
use crate::wire::template::{TemplateRead, TemplateReadAnswer, TemplateReadRequest, TemplateValue};

/// How long one blocking read waits for a change.
const FOLLOW_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed read before the next.
const RETRY: Duration = Duration::from_secs(2);

/// Where a task's template reads go (the servers, for one task).
pub trait TemplateReader: Send + Sync {
    /// The values of `reads` once the servers' index passes `min_index`.
    fn read(
        &self,
        reads: Vec<TemplateRead>,
        min_index: u64,
        wait: Duration,
    ) -> BoxFuture<'_, Result<TemplateReadAnswer, RpcError>>;
}

/// The servers, asked for one task of one allocation by its node.
pub struct RpcTemplateReader {
    pub rpc: Arc<dyn ServerRpc>,
    pub node: Arc<Node>,
    pub alloc_id: String,
    pub task: String,
}

impl TemplateReader for RpcTemplateReader {
    fn read(
        &self,
        reads: Vec<TemplateRead>,
        min_index: u64,
        wait: Duration,
    ) -> BoxFuture<'_, Result<TemplateReadAnswer, RpcError>> {
        let request = TemplateReadRequest {
            alloc_id: self.alloc_id.clone(),
            task: self.task.clone(),
            reads,
            min_index,
            wait_ms: wait.as_millis() as u64,
        };
        let (node, secret) = (self.node.id.clone(), self.node.secret_id.clone());
        Box::pin(async move { self.rpc.template_reads(&node, &secret, request).await })
    }
}

/// A task's templates with what they read and last rendered.
pub struct TemplateSet {
    templates: Vec<Template>,
    reader: Arc<dyn TemplateReader>,
    alloc_root: PathBuf,
    task: String,
    node: Arc<Node>,
    env: BTreeMap<String, String>,
    texts: Vec<String>,
    data: BTreeMap<TemplateRead, TemplateValue>,
    rendered: Vec<String>,
    index: u64,
}

/// Why the templates could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template is wrong (its text, source or destination).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The servers refused a read (a variable the task may not read).
    #[error("template read refused: {0}")]
    Refused(String),
}

impl TemplateSet {
    /// The task's templates, reading through `reader`.
    pub fn new(
        templates: Vec<Template>,
        reader: Arc<dyn TemplateReader>,
        alloc_root: PathBuf,
        task: String,
        node: Arc<Node>,
    ) -> Self {
        TemplateSet {
            templates,
            reader,
            alloc_root,
            task,
            node,
            env: BTreeMap::new(),
            texts: Vec::new(),
            data: BTreeMap::new(),
            rendered: Vec::new(),
            index: 0,
        }
    }

    /// True when the task has templates.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// True when the templates read anything from the servers (only then
    /// can they change).
    pub fn follows_servers(&self) -> bool {
        !self.data.is_empty()
    }

    /// What the `env = true` templates set, from their last render.
    pub fn env_additions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (tmpl, text) in self.templates.iter().zip(&self.rendered) {
            if tmpl.envvars {
                out.extend(super::parse_env_file(text));
            }
        }
        out
    }

    /// Renders every template, fetching what they read, and writes them.
    /// While a read variable does not exist it waits for it, telling
    /// `missing` what it waits for (once per change of that list).
    pub async fn render_all(
        &mut self,
        env: &BTreeMap<String, String>,
        mut missing: impl FnMut(&str),
    ) -> Result<(), RenderError> {
        self.env = env.clone();
        self.texts = self
            .templates
            .iter()
            .map(|t| super::source(t, &self.alloc_root, &self.task, env, &self.node))
            .collect::<Result<_, _>>()?;
        let mut told = String::new();
        loop {
            let Pass { outputs, reads, absent } = self.render_once()?;
            let unfetched: Vec<TemplateRead> = reads.iter().filter(|r| !self.data.contains_key(r)).cloned().collect();
            if !unfetched.is_empty() {
                self.fetch(0).await?;
                continue;
            }
            if absent.is_empty() {
                for (tmpl, text) in self.templates.iter().zip(&outputs) {
                    super::write(tmpl, text, &self.alloc_root, &self.task, env, &self.node)?;
                }
                self.rendered = outputs;
                return Ok(());
            }
            let list = absent.iter().map(describe).collect::<Vec<_>>().join(", ");
            if list != told {
                missing(&format!("Missing: {list}"));
                told = list;
            }
            let index = self.index;
            self.fetch(index).await?;
        }
    }

    /// Waits until a template's output changes, writes the changed ones
    /// and returns their positions. Reads that fail are retried.
    pub async fn next_change(&mut self) -> Result<Vec<usize>, RenderError> {
        loop {
            let index = self.index;
            if let Err(e) = self.fetch(index).await {
                match e {
                    RenderError::Refused(_) => return Err(e),
                    RenderError::Template(_) => tokio::time::sleep(RETRY).await,
                }
                continue;
            }
            let Pass { outputs, absent, .. } = self.render_once()?;
            let changed: Vec<usize> = (0..outputs.len()).filter(|i| self.rendered.get(*i) != outputs.get(*i)).collect();
            if changed.is_empty() || !absent.is_empty() {
                continue;
            }
            let quiet = changed.iter().filter_map(|i| self.templates[*i].wait.as_ref()).filter_map(|w| w.min).max();
            if let Some(min) = quiet.filter(|m| *m > 0) {
                // Let a burst of changes settle before acting once.
                tokio::time::sleep(Duration::from_nanos(min as u64)).await;
                let _ = self.fetch(0).await;
            }
            let outputs = self.render_once()?.outputs;
            let changed: Vec<usize> = (0..outputs.len()).filter(|i| self.rendered.get(*i) != outputs.get(*i)).collect();
            for i in &changed {
                super::write(&self.templates[*i], &outputs[*i], &self.alloc_root, &self.task, &self.env, &self.node)?;
            }
            self.rendered = outputs;
            if changed.is_empty() {
                continue;
            }
            let splay = changed.iter().filter_map(|i| self.templates[*i].splay).max().unwrap_or(0);
            if splay > 0 {
                tokio::time::sleep(Duration::from_nanos(rand::random::<u64>() % splay as u64)).await;
            }
            return Ok(changed);
        }
    }

    /// The templates' change modes and signals, by position.
    pub fn template(&self, i: usize) -> &Template {
        &self.templates[i]
    }

    fn render_once(&self) -> Result<Pass, RenderError> {
        let mut pass = Pass::default();
        for (tmpl, text) in self.templates.iter().zip(&self.texts) {
            let r = super::render(tmpl, text, &self.env, &self.node, &self.data)?;
            pass.absent.extend(r.missing.into_iter().filter(|m| self.data.contains_key(m)));
            pass.reads.extend(r.reads);
            pass.outputs.push(r.text);
        }
        Ok(pass)
    }

    /// Every read the templates make, once the index passes `min_index`
    /// (at once for 0), into `data`.
    async fn fetch(&mut self, min_index: u64) -> Result<(), RenderError> {
        let mut reads = self.render_once()?.reads;
        reads.extend(self.data.keys().cloned());
        let reads: Vec<TemplateRead> = reads.into_iter().collect();
        let answer = loop {
            match self.reader.read(reads.clone(), min_index, FOLLOW_WAIT).await {
                Ok(a) => break a,
                Err(RpcError::Refused(why)) => return Err(RenderError::Refused(why)),
                Err(e) => {
                    tracing::warn!(error = %e, "reading template data; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        self.index = answer.index;
        self.data = reads.into_iter().zip(answer.values).collect();
        Ok(())
    }
}

/// One render of every template with the data at hand.
#[derive(Default)]
struct Pass {
    outputs: Vec<String>,
    /// Every read made.
    reads: BTreeSet<TemplateRead>,
    /// Reads fetched but without a value (variables that do not exist).
    absent: BTreeSet<TemplateRead>,
}

/// A read as Nomad names it in its "Missing" event.
fn describe(read: &TemplateRead) -> String {
    match read {
        TemplateRead::Variable { path } => format!("nomad.var.block({path}@default.global)"),
        TemplateRead::Variables { prefix } => format!("nomad.var.list({prefix}@default.global)"),
        TemplateRead::Service { name, .. } => format!("nomad.service({name})"),
        TemplateRead::Services => "nomad.services".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{ServiceRegistration, Variable, VariableMetadata};
    use parking_lot::Mutex;

    /// Servers whose answers the test changes; each read with a min index
    /// waits until the test moves the index past it.
    struct Fake {
        state: Mutex<(u64, BTreeMap<TemplateRead, TemplateValue>)>,
        moved: tokio::sync::Notify,
    }

    impl Fake {
        fn set(&self, read: TemplateRead, value: TemplateValue) {
            let mut s = self.state.lock();
            s.0 += 1;
            s.1.insert(read, value);
            drop(s);
            self.moved.notify_waiters();
        }
    }

    impl TemplateReader for Fake {
        fn read(
            &self,
            reads: Vec<TemplateRead>,
            min_index: u64,
            _: Duration,
        ) -> BoxFuture<'_, Result<TemplateReadAnswer, RpcError>> {
            Box::pin(async move {
                loop {
                    let notified = self.moved.notified();
                    {
                        let s = self.state.lock();
                        if s.0 > min_index {
                            let empty = |r: &TemplateRead| match r {
                                TemplateRead::Variable { .. } => TemplateValue::Variable(None),
                                _ => TemplateValue::Service(Vec::new()),
                            };
                            let values =
                                reads.iter().map(|r| s.1.get(r).cloned().unwrap_or_else(|| empty(r))).collect();
                            return Ok(TemplateReadAnswer { index: s.0, values });
                        }
                    }
                    notified.await;
                }
            })
        }
    }

    fn db(addr: &str) -> TemplateValue {
        TemplateValue::Service(vec![ServiceRegistration { address: addr.into(), port: 5432, ..Default::default() }])
    }

    #[tokio::test]
    async fn waits_for_a_missing_variable_then_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("web/local")).unwrap();
        let fake = Arc::new(Fake { state: Mutex::new((1, BTreeMap::new())), moved: Default::default() });
        let db_read = TemplateRead::Service { name: "db".into(), tag: String::new() };
        fake.set(db_read.clone(), db("10.0.0.1"));
        let tmpl = Template {
            dest_path: "local/app.env".into(),
            embedded_tmpl: "{{ with nomadVar \"nomad/jobs/web\" }}PW={{ .pw }}{{ end }}\n{{ range nomadService \"db\" }}DB={{ .Address }}:{{ .Port }}{{ end }}\n".into(),
            envvars: true,
            ..Template::default()
        };
        let mut set = TemplateSet::new(
            vec![tmpl],
            fake.clone(),
            dir.path().to_path_buf(),
            "web".into(),
            Arc::new(Node::default()),
        );
        let told = Arc::new(Mutex::new(Vec::new()));
        let seen = told.clone();
        let writer = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let var = Variable {
                meta: VariableMetadata { path: "nomad/jobs/web".into(), ..Default::default() },
                items: BTreeMap::from([("pw".to_string(), "s3cret".to_string())]),
            };
            writer.set(TemplateRead::Variable { path: "nomad/jobs/web".into() }, TemplateValue::Variable(Some(var)));
        });
        set.render_all(&BTreeMap::new(), |m| seen.lock().push(m.to_string())).await.unwrap();
        assert_eq!(*told.lock(), ["Missing: nomad.var.block(nomad/jobs/web@default.global)"]);
        let file = dir.path().join("web/local/app.env");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "PW=s3cret\nDB=10.0.0.1:5432\n");
        assert_eq!(set.env_additions()["DB"], "10.0.0.1:5432");
        assert!(set.follows_servers());

        // Writes that do not change the output do not count; a moved db does.
        let writer = fake.clone();
        let read = db_read.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.set(TemplateRead::Services, TemplateValue::Services(Vec::new()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.set(read, db("10.0.0.2"));
        });
        let changed = tokio::time::timeout(Duration::from_secs(5), set.next_change()).await.unwrap().unwrap();
        assert_eq!(changed, [0]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "PW=s3cret\nDB=10.0.0.2:5432\n");
    }
}
