//! Building the graph before `start`: operator nodes, inputs and output operations are registered
//! on the context (Spark's `DStreamGraph.addInputStream` / `addOutputStream`); every registration is
//! refused once the context has started.

use super::*;

impl StreamingContext {
    /// Registers an operator node; refused once the context has started.
    pub(crate) fn register<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> (NodeMeta, ComputeFn<T>),
    ) -> Result<Arc<Node<T>>> {
        self.register_node(kind, |id| {
            let (meta, compute) = build(id);
            Node::new(meta, compute)
        })
    }

    /// Registers a fused element-wise operator (map, flat_map, filter).
    pub(crate) fn register_narrow<T: Clone + Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> (NodeMeta, NarrowFn<T>),
    ) -> Result<Arc<Node<T>>> {
        self.register_node(kind, |id| {
            let (meta, narrow) = build(id);
            Node::new_narrow(meta, narrow)
        })
    }

    fn register_node<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> Node<T>,
    ) -> Result<Arc<Node<T>>> {
        let mut g = self.inner.graph.lock();
        match *self.inner.state.lock() {
            ContextState::Initialized => {}
            ContextState::Active | ContextState::Stopped => {
                return Err(StreamingError::AlreadyStarted { kind })
            }
        }
        let id = OperatorId(u32::try_from(g.nodes.len()).unwrap_or(u32::MAX));
        let node = Arc::new(build(id));
        for p in &node.meta.inputs {
            if let Some(pn) = g.nodes.get(p.0 as usize) {
                pn.meta().consumers.fetch_add(1, Ordering::AcqRel);
            }
        }
        g.nodes.push(Arc::clone(&node) as Arc<dyn GraphNode>);
        Ok(node)
    }

    pub(crate) fn register_output(&self, output: OutputOp) {
        self.inner.graph.lock().outputs.push(Arc::new(output));
    }

    pub(crate) fn register_input(&self, input: Arc<dyn InputStream>) {
        self.inner.graph.lock().inputs.push(input);
    }

    pub(crate) fn next_receiver_id(&self) -> spate_types::ReceiverId {
        let mut g = self.inner.graph.lock();
        let id = g.next_receiver;
        g.next_receiver += 1;
        spate_types::ReceiverId(id)
    }

    pub(crate) fn same_context(&self, other: &StreamingContext) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
