/** A bounded FIFO for inference: a few run, a few wait, the rest are told to come back. */
export class QueueFullError extends Error {}

export class InferenceQueue {
  private running = 0;
  private waiting: (() => void)[] = [];
  constructor(
    readonly concurrency = 1,
    readonly maxWaiting = 8,
  ) {}

  get size() {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** No slot free and no room to wait: a new job would be refused. */
  get full(): boolean {
    return this.running >= this.concurrency && this.waiting.length >= this.maxWaiting;
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.full) throw new QueueFullError('the server is busy: too many counts queued');
    if (this.running >= this.concurrency) {
      await new Promise<void>((res) => this.waiting.push(res));
    } else this.running++;
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next)
        next(); // the slot passes straight to the next job
      else this.running--;
    }
  }
}
