"""Command queues on RabbitMQ, one module per job:

- :mod:`.connection`: the robust connection the queue sends and replies on;
- :mod:`.topology`: the exchanges and queues, declared idempotently in one place;
- :mod:`.queue`: :class:`AmqpQueue`, sending (confirmed), consuming, replies, dead letters;
- :mod:`.delivery`: :class:`AmqpDelivery`, one command delivered, and dead letters read back;
- :mod:`.acks`: the acks of one channel's deliveries, batched into few frames;
- :mod:`.leases`: workers sharing the queues, one lease per queue (the protocol's safety),
  over :mod:`.session` (one connection and what lives and dies with it) and
  :mod:`.balance` (who should hold how many leases: no I/O).
"""

from sourcery._messaging.queues.amqp.delivery import AmqpDelivery
from sourcery._messaging.queues.amqp.queue import AmqpQueue

__all__ = ["AmqpDelivery", "AmqpQueue"]
