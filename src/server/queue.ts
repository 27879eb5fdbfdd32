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

  /** `signal`: a job aborted while it waits leaves the queue at once (its place goes to others). */
  async run<T>(signal: AbortSignal | undefined, job: () => Promise<T>): Promise<T> {
    if (this.full) throw new QueueFullError('the server is busy: too many counts queued');
    signal?.throwIfAborted();
    if (this.running >= this.concurrency) {
      await new Promise<void>((res, rej) => {
        const go = () => {
          signal?.removeEventListener('abort', leave);
          res();
        };
        const leave = () => {
          this.waiting = this.waiting.filter((w) => w !== go);
          rej(signal!.reason);
        };
        this.waiting.push(go);
        signal?.addEventListener('abort', leave, { once: true });
      });
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
