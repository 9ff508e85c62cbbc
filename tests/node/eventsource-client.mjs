// Reads COUNT messages from URL with the npm `eventsource` package (a WHATWG-conformant
// EventSource) and prints each as one JSON line: {"type", "data", "lastEventId"}.
import { EventSource } from "eventsource";

const [url, count, lastEventId] = process.argv.slice(2);
const want = Number(count);
const init = lastEventId
  ? { fetch: (input, opts) => fetch(input, { ...opts, headers: { ...opts.headers, "Last-Event-ID": lastEventId } }) }
  : undefined;
const es = new EventSource(url, init);
let got = 0;
es.onmessage = (e) => {
  console.log(JSON.stringify({ type: e.type, data: e.data, lastEventId: e.lastEventId }));
  got += 1;
  if (got >= want) {
    es.close();
    process.exit(0);
  }
};
es.onopen = () => console.error("open");
es.onerror = (e) => console.error("error", e && e.message);
setTimeout(() => {
  console.error(`timeout after ${got} of ${want} messages`);
  process.exit(2);
}, 20000);
