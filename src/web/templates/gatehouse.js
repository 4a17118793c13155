// Sends each form once: a second click while the first answer is on its way would post the same
// answer again (the sign-in counts it once, but the browser shows the second answer). A page
// brought back from the back-forward cache may be sent again.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent) {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
});
window.addEventListener("pageshow", function (event) {
  if (event.persisted) {
    document.querySelectorAll("form").forEach(function (form) {
      delete form.dataset.sent;
    });
  }
});
