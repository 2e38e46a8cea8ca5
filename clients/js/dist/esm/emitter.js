/** A minimal typed event emitter (no dependency on Node's `events` or the DOM's `EventTarget`). */
export class Emitter {
    #listeners = new Map();
    /** Adds a listener; returns a function that removes it. */
    on(event, listener) {
        let set = this.#listeners.get(event);
        if (!set) {
            set = new Set();
            this.#listeners.set(event, set);
        }
        set.add(listener);
        return () => this.off(event, listener);
    }
    /** Adds a listener called at most once. */
    once(event, listener) {
        const off = this.on(event, (value) => {
            off();
            listener(value);
        });
        return off;
    }
    off(event, listener) {
        this.#listeners.get(event)?.delete(listener);
    }
    listenerCount(event) {
        return this.#listeners.get(event)?.size ?? 0;
    }
    /**
     * Calls each listener in order. A listener that throws does not stop the others or the client:
     * the exception is rethrown asynchronously (reported like any uncaught error).
     */
    emit(event, value) {
        const set = this.#listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(value);
            }
            catch (e) {
                globalThis.queueMicrotask(() => {
                    throw e;
                });
            }
        }
    }
}
