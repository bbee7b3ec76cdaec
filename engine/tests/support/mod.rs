//! One engine shard serving one backend, driven from the test thread: each
//! request carries its op, its data and where to send the outcome (the
//! harness of the backend and fault-injection tests).

#![allow(dead_code)]

use std::sync::{mpsc, Arc};
use std::time::Duration;

use keel_engine::{
    BlockBackend, Completion, DeviceId, Engine, EngineConfig, Handler, IoError, IoOp, Op, Origin,
    Shard, ShardId,
};

pub type Reply = mpsc::Sender<Result<Vec<u8>, IoError>>;

pub struct Request {
    pub op: IoOp,
    /// Bytes to write, or zeroes the length of a read.
    pub data: Vec<u8>,
    pub reply: Reply,
}

struct Executor {
    dev: DeviceId,
    waiting: slab::Slab<Reply>,
}

impl Handler<Request> for Executor {
    fn on_message(&mut self, shard: &mut Shard<Request>, _from: Origin, req: Request) {
        let buf = if req.op.has_data() {
            let Some(buf) = shard.alloc(req.data.len()) else {
                let _ = req.reply.send(Err(IoError::NoBuffer { op: req.op.name() }));
                return;
            };
            shard.buf_mut(&buf).copy_from_slice(&req.data);
            Some(buf)
        } else {
            None
        };
        let key = self.waiting.insert(req.reply);
        if let Err((err, buf)) = shard.submit(self.dev, req.op, buf, key as u64) {
            if let Some(b) = buf {
                shard.free(b);
            }
            let _ = self.waiting.remove(key).send(Err(err));
        }
    }

    fn on_completion(&mut self, shard: &mut Shard<Request>, done: Completion) {
        let reply = self.waiting.remove(done.tag as usize);
        let out = match (&done.result, &done.buf, done.op) {
            (Ok(_), Some(b), Op::Block(IoOp::Read { .. })) => Ok(shard.buf(b).to_vec()),
            (Ok(_), _, _) => Ok(Vec::new()),
            (Err(e), _, _) => Err(e.clone()),
        };
        if let Some(b) = done.buf {
            shard.free(b);
        }
        let _ = reply.send(out);
    }
}

/// The engine with one shard serving one backend.
pub struct ShardVolume {
    engine: Option<Engine<Request>>,
}

impl ShardVolume {
    pub fn start(backend: Arc<dyn BlockBackend>) -> ShardVolume {
        Self::start_with(
            backend,
            EngineConfig {
                pin: false,
                ..Default::default()
            },
        )
    }

    /// The shard pinned to `cpu`.
    pub fn start_pinned(backend: Arc<dyn BlockBackend>, cpu: usize) -> ShardVolume {
        Self::start_with(
            backend,
            EngineConfig {
                cpus: vec![cpu],
                pin: true,
                ..Default::default()
            },
        )
    }

    fn start_with(backend: Arc<dyn BlockBackend>, config: EngineConfig) -> ShardVolume {
        let engine = Engine::start(config, move |shard| {
            let dev = shard.attach(backend.clone())?;
            Ok(Executor {
                dev,
                waiting: slab::Slab::new(),
            })
        })
        .expect("engine starts");
        ShardVolume {
            engine: Some(engine),
        }
    }

    /// Starts `op` (`data`: the bytes to write, or zeroes the length of a
    /// read); the outcome arrives on the returned channel.
    pub fn start_op(&self, op: IoOp, data: Vec<u8>) -> mpsc::Receiver<Result<Vec<u8>, IoError>> {
        let (reply, rx) = mpsc::channel();
        let engine = self.engine.as_ref().expect("running");
        assert!(engine.send(ShardId(0), Request { op, data, reply }).is_ok());
        rx
    }

    /// Runs `op` and waits (bounded) for its outcome.
    pub fn run(&self, op: IoOp, data: Vec<u8>) -> Result<Vec<u8>, IoError> {
        self.start_op(op, data)
            .recv_timeout(Duration::from_secs(20))
            .expect("shard answers")
    }
}

impl Drop for ShardVolume {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().expect("engine stops cleanly");
        }
    }
}
