//! The RabbitMQ side of `events_durable`: the framework over quorum queues against a raw lapin
//! publisher with confirms and a consumer with manual acks.

use super::*;

/// How long a RabbitMQ consumer stays open after its last ack before the bench closes it to
/// check that nothing comes back. Closing a channel right after its acks makes RabbitMQ 3.10
/// requeue some of the just-acknowledged deliveries of a quorum queue (seen here: up to 26 of
/// the last events, in about 1 run in 4); half a second later, never.
const ACK_SETTLE_GRACE: Duration = Duration::from_millis(500);

pub(crate) struct AmqpBench {
    pub(crate) url: String,
    run: String,
    prefix: String,
    /// Passive declares (drained? acked?) and cleanup.
    monitor: Connection,
    fw_transport: Arc<dyn Transport>,
    fw_broker: Broker,
    raw_pub: Channel,
    raw_pub_conn: Connection,
    raw_sub_conn: Connection,
    pub(crate) server_pid: Option<u32>,
    /// Queues made so far (raw, and the framework's durable ones), deleted at the end.
    queues: RefCell<Vec<String>>,
    /// `BENCH_AMQP_RAW_AS_FRAMEWORK=1`: the raw side routes through the `micro` topic exchange
    /// and carries an envelope of the framework's size (diagnostic).
    pub(crate) raw_as_framework: bool,
}

impl AmqpBench {
    pub(crate) async fn connect(run: &str) -> Result<AmqpBench, BoxError> {
        let url = micro::test_util::amqp_url();
        let conn = || Connection::connect(&url, ConnectionProperties::default());
        let monitor = conn().await?;
        let fw_transport = micro::transport::connect(&url).await?;
        let fw_broker = Broker::new(fw_transport.clone(), "bench-publisher");
        let raw_pub_conn = conn().await?;
        let raw_pub = raw_pub_conn.create_channel().await?;
        raw_pub.confirm_select(ConfirmSelectOptions::default()).await?;
        let raw_sub_conn = conn().await?;
        Ok(AmqpBench {
            raw_as_framework: std::env::var("BENCH_AMQP_RAW_AS_FRAMEWORK").is_ok_and(|v| v != "0"),
            url: url.clone(),
            run: run.to_string(),
            prefix: format!("bench.durable.{run}.amqp"),
            monitor,
            fw_transport,
            fw_broker,
            raw_pub,
            raw_pub_conn,
            raw_sub_conn,
            server_pid: broker_pid(&url, 5672, "beam.smp"),
            queues: RefCell::default(),
        })
    }

    /// Ready messages of a queue, by a passive declare (`None` if it does not exist; a fresh
    /// channel each time, since a 404 closes it).
    async fn ready(&self, queue: &str) -> Option<u32> {
        let ch = self.monitor.create_channel().await.ok()?;
        let q = ch.queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        );
        let count = q.await.ok().map(|q| q.message_count());
        let _ = ch.close(200, "bye".into()).await;
        count
    }

    /// Waits until the queue has no ready message (polling a passive declare on `ch`).
    async fn drained(ch: &Channel, queue: &str, timeout: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let q = ch
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            if q.message_count() == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("queue {queue}: {} messages still ready after {timeout:?}", q.message_count()).into()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// After the consumer went away: anything it left unacknowledged is back in the queue.
    async fn check_all_acked(&self, queue: &str) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match self.ready(queue).await {
            Some(0) | None => Ok(()),
            Some(k) => {
                Err(format!("{k} events of {queue} were never acknowledged: back in the queue once its consumer left")
                    .into())
            }
        }
    }

    async fn raw_publish(&self, queue: &str, i: u64) -> Result<(), BoxError> {
        let payload = rmp_serde::to_vec_named(&user_event(i))?;
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut props = BasicProperties::default().with_delivery_mode(2).with_message_id(uuid_v7(&mut id).into());
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let exchange = if self.raw_as_framework {
            // The framework's envelope (same names and value sizes) and its routing (topic exchange).
            let mut t = FieldTable::default();
            t.insert("Micro-Publisher".into(), AMQPValue::LongString("events-bench-publisher".into()));
            props = props.with_headers(t).with_correlation_id(i.to_string().into());
            "micro"
        } else {
            ""
        };
        let confirm = self.raw_pub.basic_publish(exchange.into(), queue.into(), opts, &payload, props).await?;
        match confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(format!("publish to {queue} returned: no such queue").into()),
            Confirmation::Nack(_) => Err(format!("RabbitMQ refused the publish to {queue}").into()),
            Confirmation::NotRequested => Err("the raw publish channel is not in confirm mode".into()),
        }
    }

    /// The raw consumer: its own channel, prefetch C, decode inline, count, ack spawned (an
    /// event counts before its ack, as in the framework's handler).
    async fn raw_consume(
        &self,
        queue: &str,
        c: usize,
        tally: Arc<Tally>,
    ) -> Result<(Channel, actix_rt::task::JoinHandle<()>), BoxError> {
        let ch = self.raw_sub_conn.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
        if self.raw_as_framework {
            ch.queue_bind(queue.into(), "micro".into(), queue.into(), Default::default(), FieldTable::default())
                .await?;
        }
        ch.basic_qos(c.min(u16::MAX as usize) as u16, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(queue.into(), "bench-raw".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let task = actix_rt::spawn(async move {
            while let Some(d) = consumer.next().await {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("raw consumer: {e}");
                        return;
                    }
                };
                let n = match rmp_serde::from_slice::<UserEvent>(&d.data) {
                    Ok(e) => Some(e.n),
                    Err(_) => None,
                };
                // Counted before its ack, like the framework's handler (which runs before the
                // settle); the clock stops only once the broker shows every ack, on both sides.
                n.map_or_else(|| tally.bad(), |n| tally.record(n));
                actix_rt::spawn(async move {
                    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                        eprintln!("raw consumer: ack failed: {e}");
                    }
                });
            }
        });
        Ok((ch, task))
    }
}

impl Bench for AmqpBench {
    fn name(&self) -> &'static str {
        "amqp"
    }

    async fn phase(&self, cfg: &Config, side: Side, tag: &str, n: u64) -> Result<Phase, BoxError> {
        let c = cfg.concurrency;
        let tally = Tally::new(n);
        let timeout = Config::phase_timeout(n);
        match side {
            Side::Framework => {
                let topic = format!("{}.{tag}", self.prefix);
                let group = format!("bench-durable-{}-amqp-{tag}", self.run);
                let queue = format!("durable:{group}@micro.event.{topic}");
                self.queues.borrow_mut().extend([queue.clone(), format!("{group}.dlq")]);
                let name = format!("bench-durable-{}", self.run);
                let service = start_service(&self.url, &name, &topic, &group, c, &tally).await?;
                if self.ready(&queue).await.is_none() {
                    service.stop().await?;
                    return Err(format!("framework: the durable subscription declared no queue {queue}").into());
                }
                let poll = self.monitor.create_channel().await?;
                let meter = Meter::start(self.server_pid);
                let errors = publish_and_handle(&tally, cfg.window, |i| fw_publish(&self.fw_broker, &topic, i)).await?;
                Self::drained(&poll, &queue, timeout).await?;
                let phase = meter.stop(n, errors).with_tally(&tally);
                let _ = poll.close(200, "bye".into()).await;
                service.stop().await?;
                self.check_all_acked(&queue).await?;
                Ok(phase)
            }
            Side::Raw => {
                let queue = format!("{}.{tag}", self.prefix);
                self.queues.borrow_mut().push(queue.clone());
                let (ch, task) = self.raw_consume(&queue, c, tally.clone()).await?;
                let poll = self.monitor.create_channel().await?;
                let meter = Meter::start(self.server_pid);
                let errors = publish_and_handle(&tally, cfg.window, |i| self.raw_publish(&queue, i)).await?;
                Self::drained(&poll, &queue, timeout).await?;
                let phase = meter.stop(n, errors).with_tally(&tally);
                let _ = poll.close(200, "bye".into()).await;
                tokio::time::sleep(ACK_SETTLE_GRACE).await;
                let _ = ch.close(200, "bye".into()).await;
                task.abort();
                self.check_all_acked(&queue).await?;
                Ok(phase)
            }
        }
    }

    async fn cleanup(&self) {
        let queues = std::mem::take(&mut *self.queues.borrow_mut());
        for q in queues {
            // A fresh channel each: deleting a queue that is not there may close it.
            if let Ok(ch) = self.monitor.create_channel().await {
                let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
                let _ = ch.close(200, "bye".into()).await;
            }
        }
        let _ = self.fw_transport.close().await;
        for conn in [&self.raw_pub_conn, &self.raw_sub_conn, &self.monitor] {
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}
