// Scales the batch page's price histogram bars to their counts (no chart library).
(function () {
  "use strict";
  var bars = document.querySelectorAll(".hist div[data-count]");
  var max = 0;
  bars.forEach(function (b) { max = Math.max(max, Number(b.dataset.count)); });
  bars.forEach(function (b) { b.style.height = (max ? (100 * Number(b.dataset.count)) / max : 0) + "%"; });
})();
