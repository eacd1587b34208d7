/* PriceLoop annotator page: keyboard shortcuts and timing on top of plain forms.
 *
 * Every action is an ordinary <form> that works without JavaScript; htmx (hx-post on the forms)
 * swaps the #workspace fragment so the next item appears without a page reload. This file only adds:
 *   a accept · digits then Enter correct · r then 1-9 reject with a reason · s skip · u undo · ? help
 * and fills in seconds_spent (time since the item appeared) just before a form is sent.
 */
(function () {
  "use strict";

  let shownAt = performance.now();
  let rejectMode = false;

  const $ = (selector) => document.querySelector(selector);

  // True when keys belong to a text field (radios and buttons keep the shortcuts working).
  function isTyping(target) {
    if (!(target instanceof HTMLElement)) return false;
    if (target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName)) return true;
    return target.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(target.type);
  }

  function announce(text) {
    const status = $("#key-status");
    if (status) status.textContent = text;
  }

  function submit(formId) {
    const form = document.getElementById(formId);
    if (!form) return false;
    // A key can arrive before htmx's start-up pass has bound the form (it runs on DOMContentLoaded);
    // bind it now so the action swaps the item instead of reloading the page. Idempotent.
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit();
    return true;
  }

  function setRejectMode(on) {
    const form = $("#reject-form");
    rejectMode = on && Boolean(form);
    if (form) form.classList.toggle("armed", rejectMode);
    announce(rejectMode ? "Reject: press a reason number (Esc cancels)." : "");
  }

  function chooseReason(digit) {
    const radio = document.querySelector(`#reject-form input[data-key="${digit}"]`);
    if (!radio) {
      announce(`No reason ${digit}.`);
      return;
    }
    radio.checked = true;
    setRejectMode(false);
    submit("reject-form");
  }

  function startCorrection(digit) {
    const input = $("#id_corrected_price");
    if (!input) return;
    input.focus();
    input.value = digit;
  }

  function toggleHelp() {
    const help = $("#help");
    if (!help) return;
    if (help.open) help.close();
    else help.showModal();
  }

  // Keys of the item view; true when the key was one of ours.
  function itemKey(key) {
    if (rejectMode) {
      if (/^[1-9]$/.test(key)) chooseReason(key);
      else if (key === "Escape") setRejectMode(false);
      else announce("Reject: press a reason number (Esc cancels).");
      return true;
    }
    if (/^[0-9.]$/.test(key)) startCorrection(key);
    else if (key === "a") submit("accept-form") || announce("This item shows no guess: type your price.");
    else if (key === "r") setRejectMode(true);
    else if (key === "s") submit("skip-form");
    else if (key === "u") submit("undo-form");
    else return false;
    return true;
  }

  // Keys of the other views: acknowledge a new codebook (Enter), undo from the "nothing left" view.
  function otherKey(key) {
    if (key === "Enter") return submit("ack-form");
    if (key === "u") return submit("undo-form");
    return false;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const help = $("#help");
    if (help && help.open) return; // the dialog closes itself on Esc
    if (isTyping(event.target)) {
      if (key === "Escape") event.target.blur(); // Enter in the price box submits its own form
      return;
    }
    // A focused button or link already answers Enter (and Space) itself.
    if (event.target instanceof HTMLElement && event.target.closest("button, a") && (key === "Enter" || key === " ")) {
      return;
    }
    let handled = true;
    if (key === "?") toggleHelp();
    else if ($("#item")) handled = itemKey(key);
    else handled = otherKey(key);
    if (handled) event.preventDefault();
  });

  // Just before any work form is sent (by htmx or natively), stamp how long the item was on screen.
  document.addEventListener(
    "submit",
    (event) => {
      const field = event.target.querySelector && event.target.querySelector("input[name=seconds_spent]");
      if (field) field.value = ((performance.now() - shownAt) / 1000).toFixed(3);
    },
    true,
  );

  // Let go of the focus before the old item is replaced: htmx would otherwise give it to the new price
  // box (same id), and a key pressed as the next item appears would be typed into it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    if (!event.target || event.target.id !== "workspace") return;
    const active = document.activeElement;
    if (active instanceof HTMLElement && active.closest("#workspace")) active.blur();
  });

  // A new fragment means a new item: restart the clock and put focus where the keyboard needs it.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (!event.target || event.target.id !== "workspace") return;
    shownAt = performance.now();
    rejectMode = false;
    // htmx moves the focus to the new element with the old one's id (the price box): the keys would
    // then type into it. A fresh item starts with nothing focused, unless it asks for it (autofocus).
    const autofocus = document.querySelector("#workspace [autofocus]");
    const active = document.activeElement;
    if (autofocus) autofocus.focus();
    else if (active instanceof HTMLElement && active.closest("#workspace")) active.blur();
  });

  // Keep the clicked submit button disabled while its request is in flight (double submits also carry
  // the same client_token, so the server would dedupe them anyway).
  document.addEventListener("htmx:beforeRequest", () => $("#workspace")?.setAttribute("aria-busy", "true"));
  document.addEventListener("htmx:afterRequest", () => $("#workspace")?.removeAttribute("aria-busy"));
})();
