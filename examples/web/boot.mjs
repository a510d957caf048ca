/**
 * Start the page: import app.mjs (and through it every module of the page). Should any of them fail to
 * load, say so in the status line, in one line, instead of leaving "Loading…" on screen.
 */
import("./app.mjs").catch((error) => {
  const status = document.getElementById("status");
  status.textContent = `the page's code did not load (${String(error?.message ?? error).split("\n")[0]})`;
  status.title = status.textContent;
  status.classList.add("error");
  document.body.dataset.state = "error";
});
