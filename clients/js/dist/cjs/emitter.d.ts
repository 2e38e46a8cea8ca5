/** A minimal typed event emitter (no dependency on Node's `events` or the DOM's `EventTarget`). */
type Listener<T> = (value: T) => void;
export declare class Emitter<Events extends object> {
    #private;
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void;
    /** Adds a listener called at most once. */
    once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void;
    off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void;
    listenerCount<K extends keyof Events>(event: K): number;
    /**
     * Calls each listener in order. A listener that throws does not stop the others or the client:
     * the exception is rethrown asynchronously (reported like any uncaught error).
     */
    protected emit<K extends keyof Events>(event: K, value: Events[K]): void;
}
export {};
