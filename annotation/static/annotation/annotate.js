/* PriceLoop annotator page: keyboard shortcuts and timing on top of plain forms.
 *
 * Every action is an ordinary <form> that works without JavaScript; htmx (hx-post on the forms)
 * swaps the #workspace fragment so the next item appears without a page reload. This file only adds:
 *   a accept · digits then Enter correct · r then 1-9 reject with a reason · s skip · u undo · ? help
 *   f then 1-9 flag for a reviewer with a reason (then an optional note, Enter sends it)
 * fills in seconds_spent (time since the item appeared) just before a form is sent, and holds back a
 * correction that looks like a slip (outside the trainable range, or the codebook's factor away from
 * the shown guess) until the annotator confirms it with y. The server applies the same rules
 * (services.price_unusual) and refuses an unconfirmed one.
 *
 * Pre-fetch (ANNOTATION_PREFETCH): the fragment also holds the next item, leased ahead for this
 * annotator, in <template id="ahead">. Answering an item (a form marked data-advance) shows that next
 * item at once and sends the answer in the background; the server's reply (the same fragment) makes the
 * shown item the live one and brings the item after it. A refused answer is shown in #sync-error, naming
 * the item; if the server still has that item live (a price to confirm, …) it comes back. Every other
 * action waits for an answer in flight, so an undo always takes back the newest one.
 */
(function () {
  "use strict";

  let shownAt = performance.now();
  let rejectMode = false;
  let flagMode = false; // f pressed: the next digit picks the flag reason
  let pendingPrice = null; // the typed correction waiting for its confirmation (y)
  let inflight = null; // the answer sent in the background (a Promise), until its reply is applied

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

  function setFlagMode(on) {
    const form = $("#flag-form");
    flagMode = on && Boolean(form);
    if (form) form.classList.toggle("armed", flagMode);
    const panel = $("#flag-panel");
    if (panel && on) panel.open = true;
    announce(flagMode ? "Flag: press a reason number (Esc cancels)." : "");
  }

  // A flag reason is picked: the note box takes the keys (optional note), Enter sends, Esc leaves it.
  function chooseFlagReason(digit) {
    const radio = document.querySelector(`#flag-form input[data-key="${digit}"]`);
    if (!radio) {
      announce(`No flag reason ${digit}.`);
      return;
    }
    radio.checked = true;
    setFlagMode(false);
    const note = $("#flag-note");
    if (note) note.focus();
    announce("Flag: type a note if you like, then Enter sends it to a reviewer.");
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

  // A typed price as the server reads it (forms.parse_price), or null.
  function parsePrice(text) {
    const plain = text.trim().replace(/^\$/, "").replace(",", ".");
    return /^[0-9]+(\.[0-9]{1,2})?$/.test(plain) ? Number(plain) : null;
  }

  // Why a typed price cannot be sent, in the page (the form has novalidate: the browser's own bubble
  // fades and names no fix), or null. The server says the same (forms.parse_price) without the script.
  function priceProblem(text) {
    const typed = text.trim();
    if (!typed) return "Type a price first: digits, then Enter.";
    const price = parsePrice(typed);
    if (price === null) return `“${typed}” is not a price: type digits with at most 2 decimals, such as 12 or 12.99.`;
    if (price <= 0) return `“${typed}” is not a positive price: type what the product costs, such as 12.99.`;
    return null;
  }

  function showPriceError(text) {
    const box = $("#price-error");
    if (!box) return;
    box.textContent = text || "";
    box.hidden = !text;
  }

  function money(value) {
    return "$" + value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  // Why this correction needs a confirmation, or null: services.price_unusual, same rules and wording.
  function unusualPrice(form, price) {
    const min = Number(form.dataset.priceMin);
    const max = Number(form.dataset.priceMax);
    if (price < min || price > max) {
      return `${money(price)} is outside the trainable range ${money(min)}–${money(max)}: it would be saved flagged and never trained on.`;
    }
    const guess = Number(form.dataset.guess || 0); // absent on blind items: nothing to compare with
    if (guess > 0 && price > 0) {
      const ratio = price >= guess ? price / guess : guess / price;
      if (ratio >= Number(form.dataset.confirmFactor)) {
        const times = `${Number(ratio.toPrecision(3))}`;
        const how = price > guess ? `${times} times` : `1/${times} of`;
        return `${money(price)} is ${how} the model's guess (${money(guess)}).`;
      }
    }
    return null;
  }

  function showConfirm(text) {
    const box = $("#price-confirm");
    if (box) {
      box.textContent = text;
      box.hidden = !text;
    }
  }

  function askConfirmation(input, reason) {
    pendingPrice = input.value;
    showConfirm(`${reason} Press y to save it anyway, or change the price.`);
    announce("Unusual price: y saves it, any other change edits it.");
  }

  function clearConfirmation() {
    pendingPrice = null;
    showConfirm("");
  }

  function confirmPrice() {
    const field = $("#correct-form input[name=confirm_price]");
    if (!field) return;
    field.value = "1";
    pendingPrice = null;
    submit("correct-form");
  }

  function startCorrection(digit) {
    const input = $("#id_corrected_price");
    if (!input) return;
    input.focus();
    input.value = digit;
  }

  // The page shows a new item (from the server or from the template ahead): restart the clock and put
  // focus where the keyboard needs it.
  function itemShown() {
    shownAt = performance.now();
    rejectMode = false;
    flagMode = false;
    clearConfirmation();
    announce(""); // a key notice ("no guess to accept", …) was about the item that left
    // The server refused a correction as unusual (its reason is the notice above): y confirms it.
    const refused = $("#correct-form[data-unconfirmed]");
    if (refused) {
      pendingPrice = $("#id_corrected_price").value;
      showConfirm("Press y to save it anyway, or change the price.");
    }
    // htmx moves the focus to the new element with the old one's id (the price box): the keys would
    // then type into it. A fresh item starts with nothing focused, unless it asks for it (autofocus).
    const autofocus = document.querySelector("#workspace [autofocus]");
    const active = document.activeElement;
    if (autofocus) autofocus.focus();
    else if (active instanceof HTMLElement && active.closest("#workspace")) active.blur();
  }

  function syncError(text) {
    const box = $("#sync-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  // Show the item ahead now and send ``form`` (the answer to the item that leaves) in the background.
  // False when the page holds no item ahead: the form then goes the usual way (one round trip).
  function advance(form) {
    const workspace = $("#workspace");
    const ahead = workspace && workspace.querySelector("template#ahead");
    if (!ahead) return false;
    const body = new FormData(form);
    const title = ($("#item-title") || {}).textContent || "the previous item";
    syncError(""); // the annotator has seen it: they act again
    const active = document.activeElement;
    if (active instanceof HTMLElement && active.closest("#workspace")) active.blur();
    workspace.replaceChildren(ahead.content.cloneNode(true));
    if (window.htmx) window.htmx.process(workspace);
    itemShown();
    inflight = fetch(form.action, { method: "POST", body, headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then((response) => {
        if (!response.ok) throw new Error(`the server answered ${response.status}`);
        return response.text();
      })
      .then((html) => applyReply(html, title))
      .catch((error) => {
        syncError(`Your answer on “${title}” was not saved (${error.message}). It is back in your queue.`);
        if (window.htmx) window.htmx.ajax("GET", workspace.dataset.refresh, { target: "#workspace" });
      })
      .finally(() => {
        inflight = null;
      });
    return true;
  }

  // The reply to an answer sent in the background: the server's fragment.
  function applyReply(html, title) {
    const reply = document.createElement("template");
    reply.innerHTML = html;
    for (const panel of reply.content.querySelectorAll("[hx-swap-oob]")) {
      panel.removeAttribute("hx-swap-oob");
      const old = document.getElementById(panel.id);
      if (old) old.replaceWith(panel);
    }
    const refused = reply.content.querySelector(".flash[data-refused]");
    if (refused) syncError(`Your answer on “${title}” was not saved: ${refused.textContent}`);
    const workspace = $("#workspace");
    const shown = $("#workspace #item");
    const served = reply.content.querySelector("#item");
    if (shown && served && served.dataset.assignment === shown.dataset.assignment) {
      // The item on screen is the live one now: keep it as it is (a price being typed stays) and
      // take the next item ahead.
      const old = workspace.querySelector("template#ahead");
      if (old) old.remove();
      const ahead = reply.content.querySelector("template#ahead");
      if (ahead) workspace.append(ahead);
      // A notice about the saved answer ("flagged: outside …", a check item's true price) stays in view.
      const notice = reply.content.querySelector(".flash:not([data-refused])");
      const oldNotice = workspace.querySelector(":scope > .flash");
      if (oldNotice) oldNotice.remove();
      if (notice) workspace.prepend(notice);
      return;
    }
    // Something else is current (the refused item is back, a new codebook, nothing left, …): show it.
    const active = document.activeElement;
    if (active instanceof HTMLElement && active.closest("#workspace")) active.blur();
    workspace.replaceChildren(reply.content);
    if (window.htmx) window.htmx.process(workspace);
    itemShown();
  }

  function toggleHelp() {
    const help = $("#help");
    if (!help) return;
    if (help.open) help.close();
    else help.showModal();
  }

  // Keys of the item view; true when the key was one of ours.
  function itemKey(key) {
    if (pendingPrice !== null && key === "y") {
      confirmPrice();
      return true;
    }
    if (flagMode) {
      if (/^[1-9]$/.test(key)) chooseFlagReason(key);
      else if (key === "Escape") {
        setFlagMode(false);
        const panel = $("#flag-panel");
        if (panel) panel.open = false;
      } else announce("Flag: press a reason number (Esc cancels).");
      return true;
    }
    if (rejectMode) {
      if (/^[1-9]$/.test(key)) chooseReason(key);
      else if (key === "Escape") setRejectMode(false);
      else announce("Reject: press a reason number (Esc cancels).");
      return true;
    }
    // A minus sign or "$" starts a price too: typed into the box, where a wrong one is named on Enter.
    if (/^[0-9.$-]$/.test(key)) startCorrection(key);
    else if (key === "a") submit("accept-form") || announce("This item shows no guess: type your price.");
    else if (key === "r") setRejectMode(true);
    else if (key === "f") setFlagMode(true);
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
      else if (key === "y" && pendingPrice !== null && event.target.id === "id_corrected_price") {
        event.preventDefault(); // the confirmation keystroke, not a letter in the price
        confirmPrice();
      }
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

  // Just before any work form is sent (by htmx or natively): hold back an unusual correction until it
  // is confirmed (capture phase, so neither htmx nor the browser sends it), and stamp how long the item
  // was on screen.
  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (form instanceof HTMLFormElement && form.id === "correct-form") {
        const input = form.querySelector("#id_corrected_price");
        const confirmed = form.querySelector("input[name=confirm_price]");
        const problem = input ? priceProblem(input.value) : null;
        if (problem) {
          event.preventDefault();
          event.stopImmediatePropagation();
          showPriceError(problem);
          input.focus();
          return;
        }
        const price = input ? parsePrice(input.value) : null;
        const reason = price === null ? null : unusualPrice(form, price);
        if (reason && confirmed && confirmed.value !== "1") {
          event.preventDefault();
          event.stopImmediatePropagation();
          askConfirmation(input, reason);
          return;
        }
      }
      if (!(form instanceof HTMLFormElement) || !form.closest("#workspace")) return;
      if (inflight) {
        // An answer is still on its way: this action waits for it (an undo then takes back that one).
        event.preventDefault();
        event.stopImmediatePropagation();
        const id = form.id;
        const assignment = form.querySelector("input[name=assignment_id]");
        const on = assignment ? assignment.value : null;
        inflight.then(() => {
          const again = document.getElementById(id);
          const still = again && again.querySelector("input[name=assignment_id]");
          if (again && (on === null || (still && still.value === on))) again.requestSubmit();
        });
        return;
      }
      const field = form.querySelector("input[name=seconds_spent]");
      if (field) field.value = ((performance.now() - shownAt) / 1000).toFixed(3);
      if (form.hasAttribute("data-advance") && advance(form)) {
        event.preventDefault();
        event.stopImmediatePropagation();
        return;
      }
      // Enter in the price box submits natively, not through submit() above: make sure htmx has bound
      // this form (a fragment swapped in moments ago may not be yet), so that the answer swaps the item
      // instead of reloading the page. A listener htmx adds here still runs: the target is not reached.
      if (window.htmx) window.htmx.process(form);
    },
    true,
  );

  // Typing in the price box after a warning withdraws it: the new price is checked when it is sent.
  document.addEventListener("input", (event) => {
    if (event.target.id === "id_corrected_price") showPriceError(null);
    if (pendingPrice !== null && event.target.id === "id_corrected_price" && event.target.value !== pendingPrice) {
      clearConfirmation();
    }
  });

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
    itemShown();
  });

  // htmx "settles" a swap about 20 ms later by putting back the new fragment's class attributes, which
  // would wipe the reject mode armed by an r pressed in between: apply the page's state again.
  document.addEventListener("htmx:afterSettle", (event) => {
    if (!event.target || event.target.id !== "workspace") return;
    const form = $("#reject-form");
    if (form) form.classList.toggle("armed", rejectMode);
    const flagForm = $("#flag-form");
    if (flagForm) flagForm.classList.toggle("armed", flagMode);
    const panel = $("#flag-panel");
    if (panel && flagMode) panel.open = true;
  });

  // Keep the clicked submit button disabled while its request is in flight (double submits also carry
  // the same client_token, so the server would dedupe them anyway).
  document.addEventListener("htmx:beforeRequest", () => $("#workspace")?.setAttribute("aria-busy", "true"));
  document.addEventListener("htmx:afterRequest", () => $("#workspace")?.removeAttribute("aria-busy"));
})();
