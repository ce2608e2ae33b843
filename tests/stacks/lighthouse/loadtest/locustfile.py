import os

from locust import HttpUser, between, task


class Agent(HttpUser):
    wait_time = between(0.5, 2)

    @task
    def search(self):
        self.client.get("/v1/beacons?near=51.5,-0.1", headers={"X-API-Key": os.environ["LOADTEST_API_KEY"]})
