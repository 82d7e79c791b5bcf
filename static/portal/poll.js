// Live refresh that works under the Content-Security-Policy (script-src 'self', no eval).
//
// htmx's `hx-trigger="every 15s [document.visibilityState === 'visible']"` evaluates the bracket
// filter with eval, which the CSP blocks, so such a page never refreshes. Instead an element asks
// for a refresh with `data-poll-seconds="15" hx-trigger="poll"`; this script fires that `poll`
// event while the tab is visible, pauses while it is hidden and refreshes at once when it is shown
// again. Poll requests carry `X-Portal-Poll: 1`, so the server can tell them from a person's
// clicks (they do not extend the session's idle timeout).
(function () {
  "use strict";

  const nextPoll = new WeakMap(); // element -> time (ms) of its next poll

  function poll(element, now) {
    nextPoll.set(element, now + Number(element.dataset.pollSeconds) * 1000);
    element.dispatchEvent(new CustomEvent("poll", { bubbles: false }));
  }

  function pollDueElements() {
    if (document.visibilityState !== "visible") {
      return;
    }
    const now = Date.now();
    document.querySelectorAll("[data-poll-seconds]").forEach(function (element) {
      const due = nextPoll.get(element);
      if (due === undefined) {
        // Just rendered (page load or an htmx swap): its content is fresh.
        nextPoll.set(element, now + Number(element.dataset.pollSeconds) * 1000);
      } else if (now >= due) {
        poll(element, now);
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "visible") {
      return;
    }
    const now = Date.now();
    document.querySelectorAll("[data-poll-seconds]").forEach(function (element) {
      if (nextPoll.has(element) && now >= nextPoll.get(element)) {
        poll(element, now); // missed at least one refresh while hidden
      }
    });
  });

  document.addEventListener("htmx:configRequest", function (event) {
    const trigger = event.detail.triggeringEvent;
    if (trigger && trigger.type === "poll") {
      event.detail.headers["X-Portal-Poll"] = "1";
    }
  });

  setInterval(pollDueElements, 1000);
  document.addEventListener("DOMContentLoaded", pollDueElements);
})();
