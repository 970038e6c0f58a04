//! The NATS side of `events_durable`: the framework over JetStream against a raw async-nats
//! JetStream publisher and pull consumer.

use super::*;

pub(crate) struct NatsBench {
    pub(crate) url: String,
    run: String,
    /// `bench.durable.<run>.nats`: every topic of this run on NATS is under it.
    prefix: String,
    /// `MICRO_EVENTS` over the monitor connection: consumer info polls, setup, cleanup.
    stream: jetstream::stream::Stream,
    fw_transport: Arc<dyn Transport>,
    fw_broker: Broker,
    raw_pub: jetstream::Context,
    raw_sub: jetstream::Context,
    pub(crate) server_pid: Option<u32>,
    /// Framework and raw consumers made so far, deleted at the end whatever happened.
    consumers: RefCell<Vec<String>>,
    pub(crate) header_note: String,
}

impl NatsBench {
    pub(crate) async fn connect(run: &str) -> Result<NatsBench, BoxError> {
        let url = micro::test_util::nats_url();
        let monitor = jetstream::new(async_nats::connect(&url).await?);
        let stream = monitor
            .get_or_create_stream(stream_config())
            .await
            .map_err(|e| format!("JetStream stream {NATS_STREAM} on {url}: {e} (is nats-server started with -js?)"))?;
        let fw_transport = micro::transport::connect(&url).await?;
        let fw_broker = Broker::new(fw_transport.clone(), "bench-publisher");
        let raw_pub = jetstream::new(async_nats::connect(&url).await?);
        let raw_sub = jetstream::new(async_nats::connect(&url).await?);
        let prefix = format!("bench.durable.{run}.nats");
        let server_pid = broker_pid(&url, 4222, "nats-server");

        // What the framework puts on the wire: the same payload bytes, plus its envelope headers.
        let check_topic = format!("{prefix}.check");
        let core = async_nats::connect(&url).await?;
        let mut sub = core.subscribe(format!("micro.event.{check_topic}")).await?;
        core.flush().await?;
        fw_broker.publish_durable(&check_topic, &user_event(7)).await?;
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await?
            .ok_or("no framework event on the check subject")?;
        let raw_payload = rmp_serde::to_vec_named(&user_event(7))?;
        assert_eq!(msg.payload[..], raw_payload[..], "framework and raw payloads differ");
        let header_bytes = |h: &async_nats::HeaderMap| -> usize {
            // `NATS/1.0\r\n` ... `\r\n`, one `Name: value\r\n` per value.
            12 + h
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4))
                .sum::<usize>()
        };
        let fw_headers = msg.headers.as_ref().map_or(0, &header_bytes);
        let mut raw_h = async_nats::HeaderMap::new();
        raw_h.insert("Nats-Msg-Id", "0193f0e0-a1b2-7c3d-8e5f-60718293a4b5");
        let header_note = format!(
            "payload {} B msgpack on both sides; headers: framework {fw_headers} B ({} headers incl. Nats-Msg-Id), \
             raw {} B (Nats-Msg-Id only)",
            raw_payload.len(),
            msg.headers.as_ref().map_or(0, |h| h.len()),
            header_bytes(&raw_h)
        );
        drop(sub);
        core.drain().await?;

        Ok(NatsBench {
            url,
            run: run.to_string(),
            prefix,
            stream,
            fw_transport,
            fw_broker,
            raw_pub,
            raw_sub,
            server_pid,
            consumers: RefCell::default(),
            header_note,
        })
    }

    /// Waits until the consumer's acks are all in: nothing pending, nothing unacknowledged.
    async fn acked(&self, consumer: &str, timeout: Duration) -> Result<jetstream::consumer::Info, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.stream.consumer_info(consumer).await?;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return Ok(info);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "consumer {consumer}: {} unacknowledged and {} pending after {timeout:?}",
                    info.num_ack_pending, info.num_pending
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn fw_names(&self, tag: &str) -> (String, String, String) {
        let topic = format!("{}.{tag}", self.prefix);
        let group = format!("bench-durable-{}-nats-{tag}", self.run);
        let consumer = micro::dev::nats_consumer_name(&group, &format!("micro.event.{topic}"));
        self.consumers.borrow_mut().push(consumer.clone());
        (topic, group, consumer)
    }

    async fn fw_service(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        c: usize,
        tally: &Arc<Tally>,
    ) -> Result<ServiceHandle, BoxError> {
        let service = start_service(&self.url, &format!("bench-durable-{}", self.run), topic, group, c, tally).await?;
        if let Err(e) = self.stream.consumer_info(consumer).await {
            return Err(format!(
                "the framework's durable consumer {consumer} is not on {NATS_STREAM} ({e}): did `consumer_name` in \
                 src/transport/nats.rs change? Update nats_consumer_name here."
            )
            .into());
        }
        Ok(service)
    }

    fn raw_names(&self, tag: &str) -> (async_nats::Subject, String) {
        let subject = format!("micro.event.{}.{tag}", self.prefix);
        let consumer = format!("bench-raw-{}-{tag}", self.run);
        self.consumers.borrow_mut().push(consumer.clone());
        (subject.into(), consumer)
    }

    /// The raw durable pull consumer (made on the raw subscriber's connection).
    async fn raw_consumer(
        &self,
        name: &str,
        subject: &str,
        c: usize,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, BoxError> {
        let stream = self.raw_sub.get_stream(NATS_STREAM).await?;
        let config = pull::Config {
            durable_name: Some(name.to_string()),
            filter_subject: subject.to_string(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            // The framework's setting for a group of concurrency C (`src/transport/nats/jetstream.rs`):
            // the same limit on both sides.
            max_ack_pending: (c * 8).max(256) as i64,
            ..Default::default()
        };
        Ok(stream.create_consumer(config).await?)
    }

    /// The raw consume loop: decode inline, count, ack.
    fn raw_consume(
        consumer: jetstream::consumer::Consumer<pull::Config>,
        batch: usize,
        tally: Arc<Tally>,
    ) -> actix_rt::task::JoinHandle<()> {
        actix_rt::spawn(async move {
            let mut messages = match consumer.stream().max_messages_per_batch(batch).messages().await {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("raw consumer: cannot pull: {e}");
                    return;
                }
            };
            let mut open = *tally.gate.borrow();
            while let Some(m) = messages.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("raw consumer: {e}");
                        continue;
                    }
                };
                if !open {
                    tally.wait_open().await;
                    open = true;
                }
                match rmp_serde::from_slice::<UserEvent>(&m.payload) {
                    Ok(e) => tally.record(e.n),
                    Err(_) => tally.bad(),
                }
                if let Err(e) = m.ack().await {
                    eprintln!("raw consumer: ack failed: {e}");
                }
            }
        })
    }

    async fn raw_publish(&self, subject: &async_nats::Subject, i: u64) -> Result<(), BoxError> {
        let payload = rmp_serde::to_vec_named(&user_event(i))?;
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let msg = PublishMessage::build().payload(payload.into()).message_id(uuid_v7(&mut id));
        self.raw_pub.send_publish(subject.clone(), msg).await?.await?;
        Ok(())
    }

    async fn delete_consumer(&self, name: &str) {
        let _ = self.stream.delete_consumer(name).await;
    }
}

impl Bench for NatsBench {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn phase(&self, cfg: &Config, side: Side, tag: &str, n: u64) -> Result<Phase, BoxError> {
        let c = cfg.concurrency;
        let tally = Tally::new(n);
        match side {
            Side::Framework => {
                let (topic, group, consumer) = self.fw_names(tag);
                let service = self.fw_service(&topic, &group, &consumer, c, &tally).await?;
                let meter = Meter::start(self.server_pid);
                let errors = publish_and_handle(&tally, cfg.window, |i| fw_publish(&self.fw_broker, &topic, i)).await?;
                let info = self.acked(&consumer, Config::phase_timeout(n)).await?;
                let mut phase = meter.stop(n, errors).with_tally(&tally);
                phase.redelivered = Some(info.num_redelivered as u64);
                service.stop().await?;
                self.delete_consumer(&consumer).await;
                Ok(phase)
            }
            Side::Raw => {
                let (subject, name) = self.raw_names(tag);
                let consumer = self.raw_consumer(&name, &subject, c).await?;
                let task = Self::raw_consume(consumer, c.clamp(1, 256), tally.clone());
                let meter = Meter::start(self.server_pid);
                let errors = publish_and_handle(&tally, cfg.window, |i| self.raw_publish(&subject, i)).await?;
                let info = self.acked(&name, Config::phase_timeout(n)).await?;
                let mut phase = meter.stop(n, errors).with_tally(&tally);
                phase.redelivered = Some(info.num_redelivered as u64);
                task.abort();
                self.delete_consumer(&name).await;
                Ok(phase)
            }
        }
    }

    async fn split(&self, cfg: &Config, side: Side, tag: &str, n: u64) -> Result<Option<(Phase, Phase)>, BoxError> {
        let c = cfg.concurrency;
        let tally = Tally::gated(n);
        let timeout = Config::phase_timeout(n);
        let (publish, consume) = match side {
            Side::Framework => {
                let (topic, group, consumer) = self.fw_names(tag);
                // The durable consumer outlives the service: its events wait for the next one.
                self.fw_service(&topic, &group, &consumer, c, &tally).await?.stop().await?;
                let meter = Meter::start(self.server_pid);
                let errors = publish_all(n, cfg.window, |i| fw_publish(&self.fw_broker, &topic, i)).await;
                let publish = meter.stop(n, errors);
                let service = self.fw_service(&topic, &group, &consumer, c, &tally).await?;
                // The first C deliveries wait at the gate, so the clock sees a running consumer.
                tally.reached_gate((c as u64).min(n), timeout).await;
                let meter = Meter::start(self.server_pid);
                tally.open();
                tokio::time::timeout(timeout, tally.all_handled()).await.map_err(|_| "split: events missing")?;
                self.acked(&consumer, timeout).await?;
                let consume = meter.stop(n, 0).with_tally(&tally);
                service.stop().await?;
                self.delete_consumer(&consumer).await;
                (publish, consume)
            }
            Side::Raw => {
                let (subject, name) = self.raw_names(tag);
                let consumer = self.raw_consumer(&name, &subject, c).await?;
                let meter = Meter::start(self.server_pid);
                let errors = publish_all(n, cfg.window, |i| self.raw_publish(&subject, i)).await;
                let publish = meter.stop(n, errors);
                let task = Self::raw_consume(consumer, c.clamp(1, 256), tally.clone());
                // Its one loop holds the first delivery at the gate, the rest of the batch pulled.
                tally.reached_gate(1, timeout).await;
                let meter = Meter::start(self.server_pid);
                tally.open();
                tokio::time::timeout(timeout, tally.all_handled()).await.map_err(|_| "split: events missing")?;
                self.acked(&name, timeout).await?;
                let consume = meter.stop(n, 0).with_tally(&tally);
                task.abort();
                self.delete_consumer(&name).await;
                (publish, consume)
            }
        };
        Ok(Some((publish, consume)))
    }

    async fn cleanup(&self) {
        let consumers = std::mem::take(&mut *self.consumers.borrow_mut());
        for name in consumers {
            self.delete_consumer(&name).await;
        }
        // The events this run stored (both sides, and the payload check) go too.
        let _ = self.stream.purge().filter(format!("micro.event.{}.>", self.prefix)).await;
        let _ = self.fw_transport.close().await;
    }
}
