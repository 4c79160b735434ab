"""One optimization step over a global batch, and the meters of its outputs."""

from rnn.summaries import GRADIENT_NORM_OF_LAYER


def make_train_step(model, optimizer, clip_norm, top_ks, strategy, global_batch):
    """One optimization step over a global batch, as a ``tf.function``.

    On every replica: forward, cross-entropy summed over its examples and
    divided by the global batch (plus the model's weight penalties divided
    by the replicas), gradients. Then the gradients are summed
    across replicas (all-reduce) *before* the global norm is taken and
    clipped, so that ``--clip_norm`` means what it means on one device; the
    norm returned is the one before clipping. Keras' optimizer sums the
    gradients it gets across replicas once more, so each replica hands it
    1/replicas of the clipped gradient. With mixed precision the loss is
    scaled (``LossScaleOptimizer``) and the clip threshold with it.

    Returns:
      ``train_step(inputs, labels) -> {"loss", "gradient_norm",
      "optim/gradient_norm/LAYER"..., "top1", "topK" for each K of top_ks}`` for the
      global batch.
    """
    import keras
    import tensorflow as tf

    per_example_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    replicas = strategy.num_replicas_in_sync
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(inputs, labels):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            logits = tf.cast(model(inputs, training=True), tf.float32)
            loss = tf.reduce_sum(per_example_loss(labels, logits)) / global_batch
            if model.losses:  # weight penalties, once per global batch (the replicas' gradients are summed)
                loss += tf.add_n(model.losses) / replicas
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        scale = tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else 1.0
        scaled_norm = tf.linalg.global_norm(gradients)
        clipped, _ = tf.clip_by_global_norm(gradients, clip_norm * scale, use_norm=scaled_norm)
        optimizer.apply_gradients(zip([g / replicas for g in clipped], model.trainable_variables))
        # Per layer too (before clipping), to see which layer's gradients grow.
        by_layer = {}
        for variable, gradient in zip(model.trainable_variables, gradients):
            by_layer.setdefault(variable.path.split("/")[0], []).append(gradient)
        layer_norms = {f"{GRADIENT_NORM_OF_LAYER}/{layer}": tf.linalg.global_norm(grads) / scale for layer, grads in by_layer.items()}
        correct = {"top1": tf.math.in_top_k(labels, logits, 1)}
        for k in top_ks:
            correct[f"top{k}"] = tf.math.in_top_k(labels, logits, k)
        sums = context.all_reduce(tf.distribute.ReduceOp.SUM, {
            "loss": loss, **{key: tf.reduce_sum(tf.cast(hit, tf.float32)) for key, hit in correct.items()}})
        return {"loss": sums["loss"], "gradient_norm": scaled_norm / scale, **layer_norms,
                **{key: sums[key] / global_batch for key in correct}}

    @tf.function
    def train_step(inputs, labels):
        outputs = strategy.run(replica_step, args=(inputs, labels))
        # Every replica holds the same all-reduced values: take the first.
        return {key: strategy.experimental_local_results(value)[0] for key, value in outputs.items()}

    return train_step


class Meter:
    """Sums of step outputs and time over some steps (a logging interval, a session)."""

    def __init__(self):
        self.steps = self.examples = 0
        self.seconds = self.waiting = 0.0
        self.sums = {}

    def add(self, outputs, examples, seconds, waiting):
        self.steps += 1
        self.examples += examples
        self.seconds += seconds
        self.waiting += waiting
        for key, value in outputs.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self):
        """Mean of each output, plus throughput and the share of time spent waiting for input."""
        return {
            **{key: value / self.steps for key, value in self.sums.items()},
            "examples_per_second": self.examples / self.seconds,
            "input_wait_fraction": self.waiting / self.seconds,
        }
