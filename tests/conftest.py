pytest_plugins = ["tokenpulse.testing.pytest_plugin"]
