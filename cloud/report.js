// The hover box of bars and sparkline points: their data-tip, set as text (never as markup).
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  function place(event) {
    tip.style.left = event.pageX + 14 + "px";
    tip.style.top = event.pageY + 14 + "px";
  }
  document.querySelectorAll("[data-tip]").forEach(function (el) {
    el.addEventListener("mouseenter", function (event) {
      tip.textContent = el.getAttribute("data-tip");
      tip.hidden = false;
      place(event);
    });
    el.addEventListener("mousemove", place);
    el.addEventListener("mouseleave", function () { tip.hidden = true; });
  });
})();
