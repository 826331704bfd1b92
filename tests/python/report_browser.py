"""Headless Chromium for the report page tests (Debian's `chromium` and `chromium-driver`,
Selenium from PyPI): a driver that records the console and any dialog, and helpers to read
what the page shows."""

import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def chromium_missing():
    """Why the browser tests cannot run here, or None when they can."""
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


def driver(width=1400, height=1000):
    """A headless Chromium whose console (all levels) can be read with `console(d)`."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files=false"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An alert must not be dismissed silently: the test asks for it.
    opts.set_capability("unhandledPromptBehavior", "ignore")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def console(d):
    """The console messages since the last call: [(level, message)]."""
    return [(e["level"], e["message"]) for e in d.get_log("browser")]


def errors(d):
    """Console messages at warning level or above (CSP violations are SEVERE)."""
    return [m for m in console(d) if m[0] in ("SEVERE", "WARNING")]


def table(d):
    """The summary table's visible rows as dicts of the header's labels to the cells' text."""
    return d.execute_script("""
        const heads = [...document.querySelectorAll('#summary thead th')].map(
            (th) => th.textContent.replace(/[▲▼]/g, '').trim());
        return [...document.querySelectorAll('#summary tbody tr')].map((tr) => {
            const o = {key: tr.dataset.key};
            [...tr.children].forEach((td, i) => { o[heads[i]] = td.textContent; });
            return o;
        });""")
